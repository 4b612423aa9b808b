"""Sign Language MNIST: CSV files of 28x28 grayscale hand signs, for the fully connected network.

Format (Kaggle "Sign Language MNIST"): a header ``label,pixel1,...,pixel784``, then one image a row,
``label`` in 0..24 (the letters A..Y; J and Z need motion and have no samples), pixels in 0..255.

The classes are the labels that occur in the data (:func:`present_classes`), named by their letters: the
real files give 24 classes (no J), a CSV using labels 0..9 gives 10 (A..J). A label that never occurs is
neither trained nor averaged into macro figures.
"""

from __future__ import annotations

import functools
import os
import string
from pathlib import Path

import numpy as np
import pandas as pd

from yolol_tf.data.info import DatasetInfo
from yolol_tf.errors import UserError

NAMES = list(string.ascii_uppercase[:25])  # "A".."Y"; index 9 ("J") never occurs
SIDE = 28
HEADER = ["label"] + [f"pixel{i}" for i in range(1, SIDE * SIDE + 1)]
SPLIT_SEED = 0  # the train/val split never depends on the training seed, so runs stay comparable


def _first_bad(path: Path, frame: pd.DataFrame, bad: np.ndarray, what: str) -> UserError:
    """A UserError naming the first bad cell: file, line (header = line 1), column and value."""
    row, col = (int(v) for v in np.argwhere(bad)[0])
    value = frame.iat[row, col]
    if pd.isna(value):
        value = "(empty)"
    elif isinstance(value, str):
        value = repr(value)  # quoted, so stray spaces or letters show
    else:
        value = str(getattr(value, "item", lambda: value)())
    return UserError(f"{path}:{row + 2}: {frame.columns[col]} {what}. Received: {value}")


@functools.lru_cache(maxsize=4)
def _read(path: Path, mtime_ns: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    del mtime_ns, size  # part of the cache key only: an edited file is read again
    try:
        frame = pd.read_csv(path, engine="c")
    except pd.errors.ParserError as e:
        raise UserError(f"{path}: not a Sign-MNIST CSV ({e})") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: empty file, expected a header `label,pixel1,...,pixel784`") from None
    columns = [c.strip() for c in frame.columns]
    if columns != HEADER:
        wrong = next(
            (i for i, (a, b) in enumerate(zip(columns, HEADER, strict=False)) if a != b),
            min(len(columns), 785),
        )
        found = columns[wrong] if wrong < len(columns) else "(nothing)"
        expected = HEADER[wrong] if wrong < len(HEADER) else "(end of line)"
        raise UserError(
            f"{path}:1: header column {wrong + 1} should be {expected!r}. Received: {found!r} "
            f"(expected `label,pixel1,...,pixel784`, {len(HEADER)} columns; found {len(columns)})"
        )
    if frame.empty:
        raise UserError(f"{path}: no rows after the header")
    # Only columns pandas could not read as numbers need the slow element-wise look.
    numbers = frame.apply(lambda c: c if c.dtype.kind in "iuf" else pd.to_numeric(c, errors="coerce"))
    numbers = numbers.to_numpy(np.float64)
    bad = np.isnan(numbers) | (numbers != np.round(numbers))
    if bad.any():
        raise _first_bad(path, frame, bad, "must be a whole number")
    labels, pixels = numbers[:, 0], numbers[:, 1:]
    bad_label = (labels < 0) | (labels >= len(NAMES))
    if bad_label.any():
        raise _first_bad(path, frame, np.c_[bad_label, np.zeros_like(pixels, bool)], "must be in 0..24")
    bad_pixel = (pixels < 0) | (pixels > 255)
    if bad_pixel.any():
        raise _first_bad(path, frame, np.c_[np.zeros_like(labels, bool), bad_pixel], "must be in 0..255")
    images = pixels.astype(np.uint8).reshape(-1, SIDE, SIDE, 1)
    return images, labels.astype(np.int32)


def read_sign_mnist(csv_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Reads and checks a Sign-MNIST CSV (cached while the file is unchanged).

    Args:
        csv_path: the CSV file.

    Returns:
        (uint8 images [N, 28, 28, 1], int32 labels [N]).
    """
    path = Path(csv_path)
    if not path.is_file():
        raise UserError(f"Sign-MNIST CSV not found: {path}")
    stat = path.stat()
    return _read(path.resolve(), stat.st_mtime_ns, stat.st_size)


def split_indices(n: int, validation_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train, val) row indices: a fixed permutation, the first part held out."""
    if not 0.0 < validation_fraction < 1.0:
        raise UserError(
            f"validation_fraction must be between 0 and 1. Received: validation_fraction={validation_fraction}"
        )
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_val = max(1, int(round(n * validation_fraction)))
    if n_val >= n:
        raise UserError(f"Too few rows ({n}) to hold out {validation_fraction:.0%} for validation")
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def present_classes(*csv_paths: str | os.PathLike) -> list[int]:
    """The label values that occur in any of the CSV files, sorted: the classes a model learns.

    Args:
        *csv_paths: the CSV files of one dataset (training, and the held-back test file).
    """
    values: set[int] = set()
    for path in csv_paths:
        values.update(int(v) for v in np.unique(read_sign_mnist(path)[1]))
    return sorted(values)


def _class_indices(path: str | os.PathLike, labels: np.ndarray, classes: list[int]) -> np.ndarray:
    """Each label's position in ``classes`` (a UserError naming the first row whose label is not one)."""
    lookup = np.full(len(NAMES), -1, np.int32)
    lookup[classes] = np.arange(len(classes), dtype=np.int32)
    indices = lookup[labels]
    missing = np.flatnonzero(indices < 0)
    if len(missing):
        row = int(missing[0])
        raise UserError(
            f"{path}:{row + 2}: label {int(labels[row])} does not occur in the training data "
            f"(its classes: {', '.join(str(c) for c in classes)})"
        )
    return indices


def load_sign_mnist(
    csv_path: str | os.PathLike,
    batch_size: int = 32,
    *,
    training: bool = False,
    augment: float = 0.0,
    mixup: float = 0.0,
    cutmix: float = 0.0,
    seed: int | None = None,
    validation_fraction: float | None = None,
    subset: str | None = None,
    drop_remainder: bool = False,
    repeat: bool = False,
    classes: list[int] | None = None,
):
    """A Sign-MNIST CSV as batches of (uint8 [B, 28, 28, 1], float32 one-hot [B, classes]).

    Args:
        csv_path: the CSV file.
        batch_size: samples per batch.
        training: shuffle (every epoch) and apply ``augment``.
        augment: augmentation strength in [0, 1], used only when training.
        mixup: MixUp probability per training sample (:mod:`yolol_tf.data.mix`).
        cutmix: CutMix probability; off, with a warning, as a CSV records no object geometry.
        seed: makes shuffling and augmentation repeatable.
        validation_fraction: hold out this fraction of the rows (deterministically); ``subset`` then
            picks "train" (the rest) or "val" (the held-out rows).
        subset: "train" or "val" with ``validation_fraction``; without it, the name the whole file's
            split gets in ``info.counts`` (default "train").
        drop_remainder: drop a last, smaller batch.
        repeat: repeat forever.
        classes: the label values that are classes, in output order; default those in this file.

    Returns:
        (tf.data.Dataset, DatasetInfo).

    Example:
        >>> ds, info = load_sign_mnist("sign_mnist_train.csv", validation_fraction=0.1, subset="train")  # doctest: +SKIP
    """
    import tensorflow as tf

    from yolol_tf.data import mix
    from yolol_tf.data.pipeline import augment_dataset

    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
    if not 0.0 <= augment <= 1.0:
        raise UserError(f"augment must be in [0, 1]. Received: augment={augment}")
    mix.check(mixup, cutmix)
    images, labels = read_sign_mnist(csv_path)
    classes = present_classes(csv_path) if classes is None else list(classes)
    labels = _class_indices(csv_path, labels, classes)
    if validation_fraction is not None:
        if subset not in ("train", "val"):
            raise UserError(
                f"subset must be 'train' or 'val' with validation_fraction. Received: subset={subset!r}"
            )
        train_idx, val_idx = split_indices(len(labels), validation_fraction)
        counts = {"train": len(train_idx), "val": len(val_idx)}
        chosen = train_idx if subset == "train" else val_idx
        images, labels = images[chosen], labels[chosen]
    else:
        counts = {subset or "train": len(labels)}
    info = DatasetInfo(
        names=[NAMES[c] for c in classes], num_classes=len(classes), image_shape=(SIDE, SIDE, 1),
        counts=counts, single_label=True, source=str(csv_path),
    )  # fmt: skip
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if training:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(
        lambda x, y: (x, tf.one_hot(y, len(classes), dtype=tf.float32)), num_parallel_calls=tf.data.AUTOTUNE
    )
    if training:
        cutmix = mix.usable_cutmix(cutmix, False, str(csv_path))
        ds = mix.mix_dataset(ds, mixup=mixup, cutmix=cutmix, min_visible=0.5, seed=seed)
        ds = augment_dataset(ds, augment, seed)
    from yolol_tf.data.pipeline import finish

    return finish(ds), info
