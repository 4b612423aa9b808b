"""The crops an export is calibrated and checked on: the run's data, the user's ``--data``, or random pixels.

Check crops come from the validation split (else test, else train) and calibration crops from the
training split, both opened by :func:`yolol_tf.inference.loading.run_data` exactly as evaluate opens
them. Without a run folder or ``--data``, a float32 export is checked on random pixels (parity only); a
quantised one needs labelled crops and asks for ``--data``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from yolol_tf.errors import UserError
from yolol_tf.inference.loading import run_config, run_data
from yolol_tf.runs import ResolvedModel

if TYPE_CHECKING:
    import tensorflow as tf


def take(ds: tf.data.Dataset, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``limit`` (crops, labels) from a batched dataset, as numpy arrays."""
    xs, ys, n = [], [], 0
    for x, y in ds:
        xs.append(x.numpy())
        ys.append(y.numpy())
        n += len(xs[-1])
        if n >= limit:
            break
    if not xs:
        return np.zeros((0,)), np.zeros((0,))
    return np.concatenate(xs)[:limit], np.concatenate(ys)[:limit]


def export_crops(
    resolved: ResolvedModel,
    data: str | os.PathLike | None,
    shape: tuple[int, ...],
    *,
    calibration: int,
    check: int,
    need_labels: bool,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """(calibration crops or None, check crops, check labels or None) for this model.

    Args:
        resolved: the model and its run folder.
        data: crops to use instead of the run's data.
        shape: the model's input shape; the crops must have it.
        calibration: how many training crops to calibrate on (0: none).
        check: how many crops to check on.
        need_labels: the check measures mAP, so random pixels will not do.

    Raises:
        UserError: no data to measure a quantised export on, or data without usable crops.
    """
    if data is None and run_config(resolved) is None:
        if need_labels:
            raise UserError(
                f"{resolved.model_path} is not in a run folder, so a quantised export needs --data "
                "(a store, YOLO dataset or CSV) to calibrate on and to measure the mAP drop"
            )
        rng = np.random.default_rng(0)
        return None, rng.integers(0, 256, size=(16, *shape)).astype(np.uint8), None
    source = run_data(resolved, data, int(shape[0]))
    split = next((s for s in ("val", "test", "train") if s in source.splits), None)
    if split is None:
        raise UserError(f"Data {data!r} has no train, val or test split to check the export on")
    x, y = take(source.dataset(split, 64), check)
    if len(x) == 0:
        raise UserError(f"The {split!r} split of the data is empty: nothing to check the export on")
    if tuple(x.shape[1:]) != tuple(shape):
        raise UserError(
            f"The data's crops are {tuple(x.shape[1:])} but the model takes {tuple(shape)}; "
            "pass --data prepared at the model's input size"
        )
    calib = None
    if calibration:
        calib_split = "train" if "train" in source.splits else split
        calib, _ = take(source.dataset(calib_split, 64, training=True, augment=0.0, seed=0), calibration)
    return calib, x, y
