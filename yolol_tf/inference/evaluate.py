"""Evaluate a trained model, or any export of it, on one split: every figure at the tuned thresholds and at 0.5.

``evaluate("saved_models/first")`` loads the run's ``best.keras`` and ``labels.json``, opens the data
the run was trained on (its ``config.yaml``; else the demo data), predicts the split and returns
:func:`yolol_tf.metrics.report` twice: at the per-class thresholds tuned on the validation split during
training (``tuned``) and at 0.5 (``default``). :func:`format_report` turns the result into a terminal
table, CSV or JSON; the ``yolol-tf evaluate`` command is a thin shell over both.

An export (SavedModel folder, ``.tflite`` or ``.onnx`` file) is evaluated the same way through its
runner (:func:`yolol_tf.inference.runners.load_runner`), at the thresholds that travel with it (a
quantised export's are tuned on its own outputs), on the data of the run folder it sits in.

The model, its labels and the run's data are opened by :mod:`yolol_tf.inference.loading`, as for export.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from yolol_tf import metrics
from yolol_tf.errors import UserError
from yolol_tf.inference.loading import input_shape, load_keras_with_labels, run_data
from yolol_tf.models.outputs import predict_probs
from yolol_tf.runs import Labels, ResolvedModel, resolve_model

if TYPE_CHECKING:
    import tensorflow as tf

    from yolol_tf.data import DatasetInfo

FORMATS = ("table", "json", "csv")


def _check_fit(model_path: Path, num_outputs: int, shape: tuple, info: DatasetInfo) -> None:
    """Refuses data whose class count or image shape the model cannot take."""
    if info.num_classes != num_outputs:
        raise UserError(
            f"The model {model_path} has {num_outputs} classes but the data {info.source} has "
            f"{info.num_classes}; evaluate it on the data it was trained on"
        )
    if None not in shape and tuple(info.image_shape) != shape:
        raise UserError(
            f"The model {model_path} takes {'x'.join(map(str, shape))} images but the data "
            f"{info.source} holds {'x'.join(map(str, info.image_shape))}; prepare it with "
            f"--size {shape[0]}"
        )


def _is_keras(model: str | os.PathLike) -> bool:
    """True for a run folder or ``.keras`` file; False for an export (SavedModel, .tflite, .onnx)."""
    path = Path(model)
    if path.is_dir():
        return not (path / "saved_model.pb").is_file()
    return path.suffix not in (".tflite", ".onnx")


def _load(
    model: str | os.PathLike,
) -> tuple[ResolvedModel, Labels, tuple, Callable[[tf.data.Dataset], tuple[np.ndarray, np.ndarray]]]:
    """(where the model is, its labels, its input shape, a function from a split to (truth, probabilities))."""
    if _is_keras(model):
        resolved, keras_model, labels = load_keras_with_labels(model, command="evaluate")
        return (
            resolved,
            labels,
            input_shape(keras_model),
            lambda ds: predict_probs(keras_model, ds, labels.activation),
        )
    from yolol_tf.inference.runners import load_runner

    runner = load_runner(model)

    def probabilities(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
        truths, probs = [], []
        for images, truth in ds:
            probs.append(np.asarray(runner(images.numpy()), np.float64))
            truths.append(np.asarray(truth, np.float32))
        if not probs:
            return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float64)
        return np.concatenate(truths), np.concatenate(probs)

    return resolve_model(model), runner.labels, tuple(runner.labels.input_shape), probabilities


def evaluate(
    model: str | os.PathLike,
    data: str | os.PathLike | None = None,
    split: str = "test",
    *,
    batch_size: int = 64,
    thresholds: list[float] | np.ndarray | None = None,
) -> dict[str, Any]:
    """Evaluates a model on one split of a dataset.

    Args:
        model: a run folder (its ``best.keras`` is used) or a ``.keras`` file, with ``labels.json`` beside
            it for names and tuned thresholds (without one: ``class_0``... and 0.5); or an export (a
            SavedModel folder, ``.tflite`` or ``.onnx`` file) with the labels that travel with it.
        data: a store folder, a YOLO dataset (data.yaml or folder), a Sign-MNIST CSV, or None for the data
            the run was trained on (the ``config.yaml`` of the run folder the model sits in), else the
            embedded demo data.
        split: "test", "val" or "train".
        batch_size: samples per prediction batch.
        thresholds: per-class thresholds that replace the tuned ones from ``labels.json``.

    Returns:
        A JSON-ready dict: ``model``, ``data``, ``split``, ``samples``, ``activation``, ``names``,
        ``warnings`` (e.g. class names that differ from the data's), ``tuned`` (a
        :func:`yolol_tf.metrics.report` at the tuned thresholds) and ``default`` (at 0.5).

    Example:
        >>> result = evaluate("saved_models/first", split="test")  # doctest: +SKIP
        >>> print(format_report(result))  # doctest: +SKIP
    """
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1. Received: batch_size={batch_size}")
    resolved, labels, shape, probabilities = _load(model)
    num_outputs = len(labels.names)
    thresholds = labels.thresholds if thresholds is None else thresholds
    if len(thresholds) != num_outputs:
        raise UserError(f"{len(thresholds)} thresholds given for {num_outputs} classes")

    side = shape[0] or (labels.input_shape[0] if labels.input_shape else None)
    source = run_data(resolved, data, None if side is None else int(side))
    info = source.info
    if split not in source.splits:
        raise UserError(
            f"Split {split!r} is not in the data {info.source}. Available splits: {', '.join(source.splits)}"
        )
    _check_fit(resolved.model_path, num_outputs, shape, info)
    warnings = []
    if list(info.names) != list(labels.names):
        warnings.append(
            f"class names differ between the model ({', '.join(labels.names)}) and the data "
            f"({', '.join(info.names)}); figures are matched by class index"
        )

    y_true, y_prob = probabilities(source.dataset(split, batch_size))
    if len(y_true) == 0:
        raise UserError(f"Split {split!r} of {info.source} has no samples")
    single_label = labels.activation == "softmax" or info.single_label
    names = list(labels.names)
    return {
        "model": str(resolved.model_path),
        "data": str(info.source),
        "split": split,
        "samples": int(len(y_true)),
        "activation": labels.activation,
        "names": names,
        "warnings": warnings,
        "tuned": metrics.report(y_true, y_prob, np.asarray(thresholds), names, single_label=single_label),
        "default": metrics.report(
            y_true, y_prob, metrics.DEFAULT_THRESHOLD, names, single_label=single_label
        ),
    }


# ---------------------------------------------------------------------------------------------- output

_SUMMARY = [
    ("accuracy", "accuracy (argmax)"),
    ("f1_micro", "F1 micro"),
    ("f1_macro", "F1 macro"),
    ("f1_samples", "F1 samples"),
    ("precision_micro", "precision micro"),
    ("precision_macro", "precision macro"),
    ("recall_micro", "recall micro"),
    ("recall_macro", "recall macro"),
    ("hamming_loss", "Hamming loss"),
    ("exact_match", "exact match"),
]
CSV_COLUMNS = [
    "class",
    "ap",
    "precision",
    "recall",
    "f1",
    "support",
    "threshold",
    "precision_at_0.5",
    "recall_at_0.5",
    "f1_at_0.5",
]


def _num(value: float, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _class_rows(result: dict[str, Any]) -> list[list[Any]]:
    """One row per class in CSV_COLUMNS order: figures at the tuned thresholds, then F1 etc. at 0.5."""
    pairs = zip(result["tuned"]["per_class"], result["default"]["per_class"], strict=True)
    tuned_keys = ("name", "ap", "precision", "recall", "f1", "support", "threshold")
    return [[t[k] for k in tuned_keys] + [d["precision"], d["recall"], d["f1"]] for t, d in pairs]


def check_format(fmt: str) -> None:
    """Refuses a report format :func:`format_report` does not write (call it before evaluating).

    Raises:
        UserError: ``fmt`` is not "table", "json" or "csv".
    """
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}. Received: format={fmt!r}")


def format_report(result: dict[str, Any], fmt: str = "table") -> str:
    """Renders an :func:`evaluate` result.

    Args:
        result: what :func:`evaluate` returned.
        fmt: "table" (summary and per-class table for a terminal), "csv" (the per-class table, one row per
            class, at the tuned thresholds and at 0.5) or "json" (everything; NaN as null).
    """
    check_format(fmt)
    if fmt == "json":
        return json.dumps(metrics.json_safe(result), indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for row in _class_rows(result):
            writer.writerow(["" if isinstance(v, float) and math.isnan(v) else v for v in row])
        return buffer.getvalue()

    tuned, default = result["tuned"], result["default"]
    lines = [
        f"model   {result['model']}",
        f"data    {result['data']}  split={result['split']}  samples={result['samples']}  "
        f"classes={tuned['classes']}  positive labels={tuned['support']}",
        *(f"warning: {w}" for w in result.get("warnings", [])),
        "",
        f"{'mAP':<20}{_num(tuned['map']):>10}",
        f"{'':<20}{'tuned':>10}{'@0.5':>10}",
    ]
    for key, title in _SUMMARY:
        if key in tuned:
            lines.append(f"{title:<20}{_num(tuned[key]):>10}{_num(default[key]):>10}")
    width = max([5, *(len(n) for n in result["names"])])
    lines += [
        "",
        f"{'class':<{width}}  {'AP':>6}  {'P':>6}  {'R':>6}  {'F1':>6}  {'thresh':>6}  "
        f"{'F1@0.5':>6}  {'support':>7}",
    ]
    for name, ap, p, r, f1, support, thr, _, _, f1_default in _class_rows(result):
        lines.append(
            f"{name:<{width}}  {_num(ap, 3):>6}  {_num(p, 3):>6}  {_num(r, 3):>6}  {_num(f1, 3):>6}  "
            f"{_num(thr, 3):>6}  {_num(f1_default, 3):>6}  {support:>7d}"
        )
    return "\n".join(lines) + "\n"


__all__ = ["CSV_COLUMNS", "FORMATS", "check_format", "evaluate", "format_report"]
