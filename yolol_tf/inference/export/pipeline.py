"""The export steps in order: choose the target, load, build in a hidden folder, check, recover, place or refuse."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from yolol_tf.errors import UserError
from yolol_tf.inference.export import recovery, tflite
from yolol_tf.inference.export.checks import (
    CheckCrops,
    Comparison,
    batched,
    latency_ms,
    refusal,
    tuned_labels,
)
from yolol_tf.inference.export.crops import export_crops
from yolol_tf.inference.export.files import place, refused_destination, size_bytes, work_folder
from yolol_tf.inference.export.result import ExportResult, RecoveryReport
from yolol_tf.inference.export.targets import Target, select_target
from yolol_tf.inference.loading import float32_model, input_shape, load_keras_with_labels
from yolol_tf.inference.runners import KerasRunner
from yolol_tf.runs import Labels

if TYPE_CHECKING:
    import keras
    import numpy as np


def export(
    model_path_or_run: str | os.PathLike,
    format: str = "savedmodel",
    *,
    quantize: str = "none",
    out: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    max_drop: float = 0.02,
    force: bool = False,
    recover: bool = True,
    num_calibration: int = 200,
    num_check: int = 512,
    latency_runs: int = 50,
    max_conversions: int = 8,
    verbose: bool = True,
) -> ExportResult:
    """Exports, checks against the Keras model, then writes atomically under the final name.

    Args:
        model_path_or_run: a run folder (its ``best.keras``) or a ``.keras`` file.
        format: "savedmodel", "tflite" or "onnx".
        quantize: "none", "float16" or "int8" (TFLite only).
        out: destination file (``.tflite``, ``.onnx``) or folder (SavedModel); default beside the model,
            e.g. ``best.int8.tflite``, ``best.onnx`` or ``best.savedmodel/``.
        data: crops to calibrate and check on (store, YOLO dataset, CSV); default the run's config.yaml
            ``data``.
        max_drop: largest mAP loss a quantised export may show against the Keras model.
        force: keep an export that fails its check under its final name anyway (for int8, the attempt
            that lost least).
        recover: when int8 loses more than ``max_drop``, keep the layers responsible in float
            (see :mod:`yolol_tf.inference.export.recovery`) rather than refusing at once.
        num_calibration: training crops for int8 calibration.
        num_check: validation crops the export is compared on.
        latency_runs: single-image calls the latency median is taken over.
        max_conversions: the most int8 models the recovery converts and checks.
        verbose: print the summary table (and the recovery's progress on stderr).

    Raises:
        UserError: bad options or missing packages (exit status 2); an export that needs Flex ops,
            disagrees with Keras in float32, cannot run, or loses more than ``max_drop`` mAP even after
            recovery (exit status 1; the last three are kept aside under a ``REFUSED`` name).
    """
    target = select_target(format, quantize)
    target.require()
    resolved, model, labels = load_keras_with_labels(model_path_or_run, command="export")
    dest = target.destination(resolved.model_path, out)
    if target.float32_only:
        model = float32_model(model)  # checked against the same float32 weights it is built from
    calib, x, y = export_crops(
        resolved,
        data,
        input_shape(model),
        calibration=num_calibration if target.calibrate else 0,
        check=num_check,
        need_labels=target.tolerance is None,
    )
    keras_runner = KerasRunner(resolved.model_path, labels, model=model)
    crops = CheckCrops(x, y, batched(keras_runner, x))

    def log(message: str) -> None:
        if verbose:
            print(message, file=sys.stderr)

    # Everything is built in a hidden folder beside the destination: a rename into place is atomic, and
    # an interrupted export leaves nothing under the final name. One export at a time to one destination.
    with work_folder(dest) as work:
        built = target.build(model, labels, work, calib)
        runner = target.load(built, labels)
        comparison = crops.compare(runner)
        refused = refusal(comparison, target.tolerance, max_drop)
        report = None
        if refused is not None and target.recoverable and recover:
            del runner  # the search loads each model it tries
            log(f"Full int8 fails its check: {refused.reason}. Looking for layers to keep in float...")
            full = recovery.Attempt((), (), built, size_bytes(built), comparison, False)
            found = _recover(target, model, labels, calib, crops, full, work=work, max_drop=max_drop,
                             max_conversions=max_conversions, log=log)  # fmt: skip
            built, comparison = found.best.path, found.best.comparison
            refused = refusal(comparison, target.tolerance, max_drop)
            runner = target.load(built, labels)
            full_latency = latency_ms(target.load(full.path, labels), x[0], latency_runs)
            report = RecoveryReport.of(found, full_latency)
        if refused is not None and not force:
            aside = refused_destination(dest, refused.tag)
            del runner  # release the interpreter's mapping of the file before it is rewritten and moved
            target.attach_labels(built, labels)
            target.write_labels(labels, aside)  # a refused export is as usable as a placed one
            place(built, aside, work)
            tried = "" if report is None else f" (after keeping up to {report.most_float} layers in float)"
            raise UserError(
                f"Export refused: {refused.reason}{tried}. Kept aside as {aside}; --force keeps it anyway", 1
            )
        latency = latency_ms(runner, x[0], latency_runs)
        keras_latency = latency_ms(keras_runner, x[0], latency_runs)
        io_quantization = runner.io_quantization
        retuned = target.retune and y is not None and comparison.probabilities is not None
        export_labels = tuned_labels(labels, y, comparison.probabilities) if retuned else labels
        del runner  # release the interpreter's mapping of the file before it is rewritten and moved
        target.attach_labels(built, export_labels)
        labels_path = target.write_labels(export_labels, dest)
        place(built, dest, work)

    result = ExportResult(
        path=dest,
        labels_path=labels_path,
        format=format,
        quantize=quantize,
        size_bytes=size_bytes(dest),
        keras_size_bytes=size_bytes(resolved.model_path),
        latency_ms=latency,
        keras_latency_ms=keras_latency,
        checked=comparison.checked,
        max_abs_diff=comparison.max_abs_diff,
        keras_map=comparison.keras_map,
        export_map=comparison.export_map,
        forced=refused is not None,
        io_quantization=io_quantization,
        thresholds=tuple(export_labels.thresholds),
        thresholds_retuned=retuned,
        float_layers=() if report is None else report.float_layers,
        recovery=report,
    )
    if verbose:
        print(result.summary())
    return result


def _recover(
    target: Target,
    model: keras.Model,
    labels: Labels,
    calibration: np.ndarray,
    crops: CheckCrops,
    full: recovery.Attempt,
    *,
    work: Path,
    max_drop: float,
    max_conversions: int,
    log: Callable[[str], None],
) -> recovery.Recovery:
    """Runs the int8 recovery search; each model it tries is written to ``work`` and checked like the export.

    Args:
        target: the int8 TFLite target (its converter settings).
        model: the Keras model, whose layer names name the ops kept in float.
        labels: the run's labels.
        calibration: the crops the export was calibrated on.
        crops: the check crops and Keras' probabilities on them.
        full: the fully quantised model that failed.
        work: the export's work folder (its ``savedmodel/`` is converted again).
        max_drop: the largest mAP loss allowed.
        max_conversions: the most models tried.
        log: progress messages.
    """

    def check(flatbuffer: bytes, stem: str) -> tuple[bool, Comparison, Path]:
        path = work / f"{stem}.tflite"
        path.write_bytes(flatbuffer)
        comparison = crops.compare(target.load(path, labels))
        return refusal(comparison, target.tolerance, max_drop) is None, comparison, path

    converter = tflite.make_converter(work / "savedmodel", target.settings, calibration)
    layer_names = [layer.name for layer in model.layers]
    return recovery.recover_int8(
        converter, calibration, layer_names, full, check, max_conversions=max_conversions, log=log
    )
