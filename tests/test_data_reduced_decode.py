"""A JPEG whose boxes are large next to the crop size is decoded smaller, and its crops stay the same."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from yolol_tf.data import prepare
from yolol_tf.data.crops import cut, plan_crops
from yolol_tf.data.images import read_image
from yolol_tf.data.labels import parse_labels
from yolol_tf.data.tfrecord import read_records

SIZE = 32


def _photo(path: Path, orientation: int | None = None) -> None:
    """A 640x480 JPEG with smooth texture and two large boxes' worth of colour (EXIF orientation optional)."""
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), (0, 0), 4)
    image[100:340, 80:380] = (220, 60, 40)
    image[200:460, 400:620] = (40, 160, 220)
    exif = Image.Exif()
    if orientation is not None:
        exif[274] = orientation
    Image.fromarray(image).save(path, quality=92, exif=exif)


def _dataset(root: Path, orientation: int | None) -> Path:
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        _photo(root / "images" / split / "a.jpg", orientation)
        (root / "labels" / split / "a.txt").write_text("0 0.36 0.45 0.45 0.5\n1 0.80 0.70 0.36 0.56\n")
    (root / "data.yaml").write_text(
        f"path: {root}\ntrain: images/train\nval: images/val\nnames: [red, blue]\n"
    )
    return root / "data.yaml"


@pytest.mark.parametrize("orientation", [None, 6], ids=["upright", "exif-rotated"])
def test_crops_of_a_reduced_decode_match_the_full_decode(tmp_path: Path, orientation: int | None) -> None:
    store = prepare(
        _dataset(tmp_path / "ds", orientation), tmp_path / "store", size=SIZE, workers=1, progress=False
    )
    image_path = tmp_path / "ds" / "images" / "train" / "a.jpg"
    full = read_image(image_path)  # decoded whole, EXIF orientation applied
    height, width = full.shape[:2]
    boxes, _ = parse_labels(str(tmp_path / "ds" / "labels" / "train" / "a.txt"), 2)
    samples, _ = plan_crops(boxes, width, height)

    rows = [r for r in csv.DictReader((store / "index.csv").open()) if r["split"] == "train"]
    windows = [tuple(int(r[k]) for k in ("x1", "y1", "x2", "y2")) for r in rows]
    assert windows == [s.window for s in samples], "index.csv keeps full-size pixel windows"

    import tensorflow as tf

    records = list(read_records(next((store / "shards").glob("train-*.tfrecord"))))
    for record, sample in zip(records, samples, strict=True):
        image = tf.train.Example.FromString(record).features.feature["image"].bytes_list.value[0]
        stored = np.frombuffer(image, np.uint8).reshape(SIZE, SIZE, 3)
        expected = cut(full, sample.window, SIZE)
        assert np.abs(stored.astype(int) - expected.astype(int)).mean() < 4.0


def test_small_boxes_keep_the_full_decode(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "ds", None)
    for label in (tmp_path / "ds" / "labels").rglob("*.txt"):
        label.write_text("0 0.5 0.5 0.05 0.05\n")  # 32 x 24 px: a 32 px crop needs every pixel
    store = prepare(data, tmp_path / "store", size=SIZE, workers=1, progress=False)
    rows = [r for r in csv.DictReader((store / "index.csv").open()) if r["split"] == "train"]
    assert [(int(r["x2"]) - int(r["x1"]), int(r["y2"]) - int(r["y1"])) for r in rows] == [(32, 24)]
