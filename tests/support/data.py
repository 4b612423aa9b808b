"""The data the tests write: crops, crop stores, Sign-MNIST CSVs and YOLO datasets, each in one writer.

Stores follow ``yolol_tf.data.store``'s layout and their records come from the package's own encoder, so
they differ from prepared ones only in what the crops show. Everything is small: 32 px crops, a few dozen
per split, three classes.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import cv2
import numpy as np
import yaml

from yolol_tf.data.info import INDEX_FILE, INFO_FILE, STORE_FORMAT, STORE_VERSION
from yolol_tf.data.records import encode_example
from yolol_tf.data.store_files import CROPS_PER_SHARD
from yolol_tf.data.tfrecord import file_crc32c

# In the colour patterns, class k lifts colour channel k: red, green, blue.
RGB = ["red", "green", "blue"]


def _centre(rng: np.random.Generator, n: int, size: int, num_classes: int, labels: np.ndarray | None):
    if labels is None:
        labels = (rng.random((n, num_classes)) < 0.4).astype(np.float32)
        labels[labels.sum(axis=1) == 0, rng.integers(0, num_classes)] = 1.0  # every crop shows something
    x = rng.integers(0, 70, size=(n, size, size, 3)).astype(np.float32)
    lo, hi = size // 4, size - size // 4
    for k in range(num_classes):
        x[labels[:, k] == 1, lo:hi, lo:hi, k % 3] += 150.0
    return x, labels


def _channel(rng: np.random.Generator, n: int, size: int, num_classes: int, labels: np.ndarray | None):
    if labels is None:
        labels = (rng.random((n, num_classes)) < 0.4).astype(np.float32)
        labels[np.arange(n) % num_classes == 0, 0] = 1  # guaranteed positives for the first classes
        labels[: min(n, num_classes), : min(n, num_classes)] = np.eye(min(n, num_classes))
    # A random level per crop and channel, so that averaging the pixels leaves the labels noisy.
    x = rng.uniform(0, 110, size=(n, 1, 1, 3)) + rng.integers(0, 40, size=(n, size, size, 3))
    for k in range(num_classes):
        x[..., k % 3] += 70 * labels[:, k, None, None]
    return x, labels


def _random(rng: np.random.Generator, n: int, size: int, num_classes: int, labels: np.ndarray | None):
    x = np.zeros((n, size, size, 3), np.uint8)
    drawn = np.zeros((n, num_classes), np.float32)
    for i in range(n):
        x[i] = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        x[i, 0, 0, 0] = i % 256  # lets a test see the order crops are read in
        if labels is None:
            drawn[
                i, rng.choice(num_classes, int(rng.integers(1, min(3, num_classes) + 1)), replace=False)
            ] = 1
    return x, drawn if labels is None else labels


PATTERNS = {"centre": _centre, "channel": _channel, "random": _random}


def crops(
    n: int,
    *,
    pattern: str = "centre",
    size: int = 32,
    num_classes: int = 3,
    seed: int | np.random.Generator = 0,
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Uint8 crops [n, size, size, 3] and float32 multi-hot labels [n, num_classes].

    Args:
        n: how many crops.
        pattern: what a crop shows.
            "centre": class k lifts channel k % 3 in the centred square over dim noise; every crop shows
            a class. A tiny conv model learns it in a few steps.
            "channel": class k lifts channel k % 3 of the whole crop over a random level per crop, so a
            model that averages the pixels reads the labels with noise; every class occurs.
            "random": random pixels and 1-3 random classes; the top-left pixel is the crop's index
            (mod 256), so a test can follow the order crops are read in.
        size: crop side.
        num_classes: classes.
        seed: the random seed, or a generator to draw from (one shared by the splits of a store).
        labels: the labels to draw crops for ([n, num_classes]); None draws them too.
    """
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {tuple(PATTERNS)}. Received: pattern={pattern!r}")
    x, y = PATTERNS[pattern](np.random.default_rng(seed), n, size, num_classes, labels)
    return np.clip(x, 0, 255).astype(np.uint8), np.asarray(y, np.float32)


def write_store(
    root: str | os.PathLike,
    samples: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    names: list[str] | None = None,
    *,
    pattern: str = "centre",
    counts: dict[str, int] | None = None,
    size: int | None = None,
    num_classes: int = 3,
    seed: int = 0,
    records_per_shard: int = CROPS_PER_SHARD,
) -> Path:
    """Writes ``root/`` as a crop store (shards, index.csv, then dataset.json) and returns its path.

    Args:
        root: the store folder; created if missing.
        samples: per split, in order, (uint8 images [n, S, S, 3], multi-hot labels [n, len(names)]); the
            labels may be of any numeric dtype holding 0s and 1s. None draws them: ``counts`` crops of
            ``pattern`` per split (see :func:`crops`), the splits drawing from one generator.
        names: class names; default class0, class1, ...
        pattern: what drawn crops show.
        counts: crops per split when drawing; default 64 train, 32 val, 16 test.
        size: the crop side S; default the images' (32 when drawing).
        num_classes: classes when drawing.
        seed: random seed when drawing.
        records_per_shard: how many records go into one shard file (the default puts a small split in one).

    Raises:
        ValueError: when an image or label does not have the shape and type the store records.
    """
    import tensorflow as tf

    root = Path(root)
    if samples is None:
        rng = np.random.default_rng(seed)
        counts = counts or {"train": 64, "val": 32, "test": 16}
        size = size or 32
        samples = {
            split: crops(n, pattern=pattern, size=size, num_classes=num_classes, seed=rng)
            for split, n in counts.items()
        }
    if size is None:
        if not samples:
            raise ValueError("write_store needs size= when there is no split")
        size = int(next(iter(samples.values()))[0].shape[1])
    if names is None:
        names = [f"class{k}" for k in range(np.shape(next(iter(samples.values()))[1])[1] if samples else 0)]
    (root / "shards").mkdir(parents=True, exist_ok=True)
    rows, splits, files, row = [], {}, {}, 0
    for split, (images, labels) in samples.items():
        shards = []
        for start in range(0, len(images), records_per_shard):
            shard = f"shards/{split}-{len(shards):05d}.tfrecord"
            shards.append(shard)
            end = min(start + records_per_shard, len(images))
            with tf.io.TFRecordWriter(str(root / shard)) as writer:
                for i in range(start, end):
                    image, label = _checked(images[i], labels[i], size, len(names), f"{split}[{i}]")
                    writer.write(encode_example(image.tobytes(), label.tobytes(), row))
                    ids = ";".join(map(str, np.flatnonzero(label)))
                    rows.append([split, f"images/{split}/{i}.jpg", 0, 0, 0, size, size, ids])
                    row += 1
            files[shard] = {**_entry(root / shard), "records": end - start}
        splits[split] = {"images": len(images), "crops": len(images), "shards": shards}
    with open(root / INDEX_FILE, "w", newline="", encoding="utf-8") as f:
        index = csv.writer(f, lineterminator="\n")
        index.writerow(["split", "image", "box", "x1", "y1", "x2", "y2", "label_ids"])
        index.writerows(rows)
    files[INDEX_FILE] = _entry(root / INDEX_FILE)
    info = {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "names": list(names),
        "num_classes": len(names),
        "size": size,
        "mode": "crop",
        "options": {"size": size, "context": 0.0, "min_visible": 0.5, "min_box": 2.0, "mode": "crop"},
        "source": "hand-written test store",
        "splits": splits,
        "problems": 0,
        "skipped_small": 0,
        "fingerprint": "test",
        "files": files,
    }
    # Written last, as prepare() does: its presence marks the store complete.
    (root / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return root


def _entry(path: Path) -> dict:
    """A file's entry in dataset.json's ``files``: its size and CRC32C."""
    return {"bytes": path.stat().st_size, "crc32c": f"{file_crc32c(path):08x}"}


def _checked(
    image: np.ndarray, label: np.ndarray, size: int, num_classes: int, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """The sample as the store holds it (uint8 pixels, uint8 multi-hot), or a ValueError naming it."""
    image, label = np.asarray(image), np.asarray(label)
    # Raw bytes go into the record, so a wrong dtype or shape would be read back as garbage, not fail.
    if image.dtype != np.uint8 or image.shape != (size, size, 3):
        raise ValueError(
            f"sample {where}: image must be uint8 {(size, size, 3)}, got {image.dtype} {image.shape}"
        )
    if label.shape != (num_classes,) or not np.isin(label, (0, 1)).all():
        raise ValueError(f"sample {where}: label must be a 0/1 vector of {num_classes}, got {label.tolist()}")
    return image, label.astype(np.uint8)


def write_sign_mnist(
    path: str | os.PathLike,
    labels: list[int],
    *,
    seed: int = 0,
    bars: bool = False,
    header: list[str] | None = None,
) -> Path:
    """Writes a Sign-MNIST CSV (``label,pixel1..pixel784``), one row per label, and returns its path.

    Args:
        path: the CSV file.
        labels: each row's label (0-24).
        seed: random seed of the pixels.
        bars: dim pixels with a bright bar whose height depends on the label, so a tiny model learns the
            labels; else pixels anywhere in 0-255. Either way the top-left pixel numbers the row (mod 256).
        header: another header line, to test its checks.
    """
    rng = np.random.default_rng(seed)
    if bars:
        pixels = rng.integers(0, 60, (len(labels), 28, 28))
        for image, label in zip(pixels, labels, strict=True):
            top = label * 9 % 28
            image[top : top + 8, :] = 230
        pixels = pixels.reshape(len(labels), 784)
    else:
        pixels = rng.integers(0, 256, (len(labels), 784))
    pixels[:, 0] = np.arange(len(labels)) % 256
    lines = [",".join(header or ["label", *(f"pixel{i}" for i in range(1, 785))])]
    lines += [",".join(map(str, [label, *row])) for label, row in zip(labels, pixels, strict=True)]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- YOLO datasets, in each layout users have ----------------------------------------------------------

YOLO_NAMES = ["apple", "banana", "cherry"]
YOLO_COLOURS = [(40, 40, 220), (40, 220, 220), (200, 40, 120)]  # BGR, one per class

# split -> image stem -> (width, height, [(class, x1, y1, x2, y2) in pixels])
IMAGES = {
    "train": {
        "a": (64, 48, [(0, 4, 4, 28, 28), (1, 20, 10, 44, 34)]),
        "b": (48, 64, [(2, 8, 8, 40, 40)]),
        "c": (64, 48, [(1, 30, 6, 60, 40), (0, 2, 20, 14, 44), (2, 34, 8, 58, 30)]),
    },
    "val": {"d": (64, 48, [(0, 10, 10, 30, 30)]), "e": (64, 48, [])},
    "test": {"f": (40, 40, [(2, 5, 5, 35, 35), (1, 0, 0, 12, 12)])},
}
LAYOUTS = ("ultralytics", "ultralytics_txt", "roboflow", "folder")


def _yolo_line(cls: int, box: tuple[float, float, float, float], width: int, height: int) -> str:
    """A label line ``class cx cy w h`` for a pixel box."""
    x1, y1, x2, y2 = box
    return f"{cls} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}"


def _draw_image(path: Path, width: int, height: int, boxes: list[tuple]) -> None:
    """Writes a grey image with each box drawn as a filled rectangle of its class colour."""
    image = np.full((height, width, 3), 90, dtype=np.uint8)
    for cls, x1, y1, x2, y2 in boxes:
        cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), YOLO_COLOURS[cls], thickness=-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def _write_split(images_dir: Path, labels_dir: Path, images: dict, ext: str = ".jpg") -> list[Path]:
    """Writes images and their label files; returns the image paths."""
    paths = []
    for stem, (width, height, boxes) in images.items():
        path = images_dir / f"{stem}{ext}"
        _draw_image(path, width, height, boxes)
        labels_dir.mkdir(parents=True, exist_ok=True)
        lines = [_yolo_line(c, (x1, y1, x2, y2), width, height) for c, x1, y1, x2, y2 in boxes]
        (labels_dir / f"{stem}.txt").write_text("".join(line + "\n" for line in lines))
        paths.append(path)
    return paths


def write_yolo_dataset(root: Path, layout: str = "ultralytics", images: dict | None = None) -> Path:
    """Writes the tiny dataset ``IMAGES`` in ``layout`` under ``root``; returns what to pass to prepare.

    Layouts: "ultralytics" (data.yaml with folders, names as a mapping), "ultralytics_txt" (data.yaml
    with .txt image lists, names as a list), "roboflow" (data.yaml beside train/ valid/ test/ with the
    export's ``../`` paths) and "folder" (images/, labels/, classes.txt; one split, PNG images).
    """
    images = IMAGES if images is None else images
    root.mkdir(parents=True, exist_ok=True)
    if layout == "ultralytics":
        for split, imgs in images.items():
            _write_split(root / "images" / split, root / "labels" / split, imgs)
        cfg = {"path": ".", **{s: f"images/{s}" for s in images}, "names": dict(enumerate(YOLO_NAMES))}
    elif layout == "ultralytics_txt":
        cfg = {"path": str(root), "names": YOLO_NAMES}
        for split, imgs in images.items():
            paths = _write_split(root / "images" / split, root / "labels" / split, imgs)
            (root / f"{split}.txt").write_text("".join(f"./images/{split}/{p.name}\n" for p in paths))
            cfg[split] = f"{split}.txt"
    elif layout == "roboflow":
        cfg = {"nc": len(YOLO_NAMES), "names": YOLO_NAMES}
        for split, imgs in images.items():
            folder = "valid" if split == "val" else split
            _write_split(root / folder / "images", root / folder / "labels", imgs)
            cfg[split] = f"../{folder}/images"
    elif layout == "folder":
        merged = {f"{s}_{k}": v for s, imgs in images.items() for k, v in imgs.items()}
        _write_split(root / "images", root / "labels", merged, ext=".png")
        (root / "classes.txt").write_text("\n".join(YOLO_NAMES) + "\n")
        return root
    else:
        raise ValueError(layout)
    (root / "data.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return root / "data.yaml"
