"""The embedded demo dataset: procedurally drawn produce on textured tables, in YOLO format.

It stands in for a fruits-and-vegetables detection set so that every command runs with no download.
Ten classes differ in shape (round, curved, elongated, clustered), colour and texture, with deliberate
look-alikes (apple/tomato, orange/carrot, lemon/banana) so a classifier has to learn more than a hue.
Each object gets its own colour, size and rotation; objects overlap but stay at least about half
visible, and every box is the exact bounding box of the object's drawn mask.

Everything is drawn with NumPy and OpenCV from a per-image seed, so the files are identical on every
run (same bytes), and the 560 images take a few seconds to make.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from yolol_tf.config import current_umask
from yolol_tf.data.demo_draw import CANVAS, draw_object
from yolol_tf.data.demo_draw import background as draw_background

DEMO_VERSION = "demo-v1"
CLASSES = (
    "apple", "orange", "banana", "lemon", "grapes",
    "carrot", "tomato", "broccoli", "eggplant", "strawberry",
)  # fmt: skip
SPLIT_SIZES = {"train": 400, "val": 80, "test": 80}
IMAGE_SHAPES = ((224, 224), (192, 256), (256, 192))  # (height, width): letterboxing gets exercised
MIN_VISIBLE = 0.55  # a placement that hides more of an earlier object than this is retried


@dataclass(frozen=True)
class DemoObject:
    """One drawn object: its class, exact box (x1, y1, x2, y2 in pixels, x2/y2 exclusive) and mask."""

    class_id: int
    box: tuple[int, int, int, int]
    mask: np.ndarray


# ---------------------------------------------------------------------------------------------------
# Composition


def _place(
    rng: np.random.Generator, img: np.ndarray, alpha: np.ndarray, h: int, w: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Scales, rotates and positions an object; returns full-image (rgb, alpha) or None if it can't fit."""
    target = rng.uniform(0.2, 0.5) * min(h, w)  # object's canvas side in image pixels
    scale = target / CANVAS
    angle = rng.uniform(-180, 180)
    out = int(math.ceil(CANVAS * scale * 1.45))
    m = cv2.getRotationMatrix2D((CANVAS / 2, CANVAS / 2), angle, scale)
    m[:, 2] += out / 2 - CANVAS / 2  # keep the rotated object centred in the output patch
    patch = cv2.warpAffine(img, m, (out, out), flags=cv2.INTER_LINEAR)
    patch_a = cv2.warpAffine(alpha, m, (out, out), flags=cv2.INTER_LINEAR)
    ys, xs = np.nonzero(patch_a > 0.5)
    if len(ys) == 0:
        return None
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    patch, patch_a = patch[y0:y1, x0:x1], patch_a[y0:y1, x0:x1]
    ph, pw = patch_a.shape
    if ph >= h or pw >= w:
        return None
    top, left = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
    full = np.zeros((h, w, 3), np.float32)
    full_a = np.zeros((h, w), np.float32)
    full[top : top + ph, left : left + pw] = patch
    full_a[top : top + ph, left : left + pw] = patch_a
    return full, full_a


def render_sample(seed: int, split: str, index: int) -> tuple[np.ndarray, np.ndarray, list[DemoObject]]:
    """Draws one demo image.

    Args:
        seed: the dataset seed.
        split: "train", "val" or "test" (each split draws from its own random stream).
        index: the image's number within its split.

    Returns:
        (image RGB uint8, background RGB uint8 without objects, objects in drawing order).
    """
    rng = np.random.default_rng([seed, list(SPLIT_SIZES).index(split), index])
    h, w = IMAGE_SHAPES[int(rng.integers(0, len(IMAGE_SHAPES)))]
    background = draw_background(rng, h, w)
    canvas = background.copy()
    owner = np.full((h, w), -1, np.int32)  # which object each pixel shows, to bound occlusion
    objects: list[DemoObject] = []
    for _ in range(int(rng.integers(2, 7))):
        class_id = int(rng.integers(0, len(CLASSES)))
        rgb, alpha = draw_object(rng, class_id)
        for _attempt in range(12):
            placed = _place(rng, rgb, alpha, h, w)
            if placed is None:
                continue
            full, full_a = placed
            cover = full_a > 0.5
            # An object mostly hidden by later ones would be a box a person could not label.
            if all(np.count_nonzero((owner == k) & ~cover) >= MIN_VISIBLE * o.mask.sum()
                   for k, o in enumerate(objects)):  # fmt: skip
                canvas = canvas * (1 - full_a[..., None]) + full * full_a[..., None]
                owner[cover] = len(objects)
                ys, xs = np.nonzero(cover)
                box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
                objects.append(DemoObject(class_id, box, cover))
                break
    brightness = rng.uniform(0.8, 1.15)
    noise = rng.normal(0, rng.uniform(2, 6), canvas.shape).astype(np.float32)
    image = np.clip(canvas * brightness + noise, 0, 255).astype(np.uint8)
    return image, np.clip(background * brightness, 0, 255).astype(np.uint8), objects


def _label_text(objects: list[DemoObject], h: int, w: int) -> str:
    lines = []
    for o in objects:
        x1, y1, x2, y2 = o.box
        cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
        lines.append(f"{o.class_id} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
    return "\n".join(lines) + ("\n" if lines else "")


def _write_dataset(root: Path, seed: int, yaml_root: Path) -> None:
    # OpenCV's thread pool does not survive a fork: a process that drew with it and then forks workers
    # (prepare does, right after generating the demo data) would hang them. The images are small anyway.
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        _write_files(root, seed, yaml_root)
    finally:
        cv2.setNumThreads(threads)


def _write_files(root: Path, seed: int, yaml_root: Path) -> None:
    for split, count in SPLIT_SIZES.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, _, objects = render_sample(seed, split, i)
            stem = f"{split}_{i:04d}"
            ok = cv2.imwrite(str(root / "images" / split / f"{stem}.jpg"), image[..., ::-1],
                             [cv2.IMWRITE_JPEG_QUALITY, 92])  # fmt: skip
            if not ok:
                raise OSError(f"could not write {root / 'images' / split / stem}.jpg")
            text = _label_text(objects, *image.shape[:2])
            (root / "labels" / split / f"{stem}.txt").write_text(text, encoding="utf-8")
    meta = {
        "path": str(yaml_root),
        "train": "images/train",
        "val": "images/val",
        "test": "images/test",
        "nc": len(CLASSES),
        "names": dict(enumerate(CLASSES)),
    }
    header = f"# yolol-tf embedded demo dataset ({DEMO_VERSION}, seed {seed}): procedurally drawn produce.\n"
    (root / "data.yaml").write_text(header + yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")


def demo_data(out: str | os.PathLike, *, seed: int = 0) -> Path:
    """Writes the demo dataset (Ultralytics layout) into ``out`` and returns its ``data.yaml``.

    Args:
        out: the folder to write (created; existing files of the same names are overwritten).
        seed: another seed gives another, equally sized dataset.

    Example:
        >>> yaml_path = demo_data("demo")  # doctest: +SKIP
    """
    out = Path(out).absolute()
    _write_dataset(out, seed, out)
    return out / "data.yaml"


def cache_root() -> Path:
    """Where yolol-tf keeps generated data: ``$YOLOL_TF_CACHE`` or ``~/.cache/yolol-tf``."""
    env = os.environ.get("YOLOL_TF_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "yolol-tf"


def demo_data_path() -> Path:
    """The cached demo dataset's ``data.yaml``, generated on first use.

    The dataset is written into a temporary folder and renamed into place, so a reader never sees half
    of it, and two processes racing both end up using the one that was renamed first.
    """
    root = cache_root()
    final = root / DEMO_VERSION
    if (final / "data.yaml").is_file():
        return final / "data.yaml"
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEMO_VERSION}-", dir=root))
    tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it private; the cache is an ordinary folder
    try:
        _write_dataset(tmp, 0, final.absolute())
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "data.yaml").is_file():
                raise  # not a lost race: a real failure
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final / "data.yaml"
