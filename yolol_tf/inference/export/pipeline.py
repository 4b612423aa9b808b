"""The export steps in order: choose the target, load, build in a hidden folder, check, place or refuse."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from yolol_tf.errors import UserError
from yolol_tf.inference.export.checks import batched, compare, latency_ms, refusal
from yolol_tf.inference.export.crops import export_crops
from yolol_tf.inference.export.files import place, refused_destination, size_bytes
from yolol_tf.inference.export.result import ExportResult
from yolol_tf.inference.export.targets import select_target
from yolol_tf.inference.loading import input_shape, load_keras_with_labels
from yolol_tf.inference.runners import KerasRunner


def export(
    model_path_or_run: str | os.PathLike,
    format: str = "savedmodel",
    *,
    quantize: str = "none",
    out: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    max_drop: float = 0.02,
    force: bool = False,
    num_calibration: int = 200,
    num_check: int = 512,
    latency_runs: int = 50,
    verbose: bool = True,
) -> ExportResult:
    """Exports, checks against the Keras model, then writes atomically under the final name.

    Args:
        model_path_or_run: a run folder (its ``best.keras``) or a ``.keras`` file.
        format: "savedmodel" or "tflite".
        quantize: "none", "float16" or "int8" (TFLite only).
        out: destination file (``.tflite``) or folder (SavedModel); default beside the model,
            e.g. ``best.int8.tflite`` or ``best.savedmodel/``.
        data: crops to calibrate and check on (store, YOLO dataset, CSV); default the run's config.yaml
            ``data``.
        max_drop: largest mAP loss a quantised export may show against the Keras model.
        force: keep an export that fails its check under its final name anyway.
        num_calibration: training crops for int8 calibration.
        num_check: validation crops the export is compared on.
        latency_runs: single-image calls the latency median is taken over.
        verbose: print the summary table.

    Raises:
        UserError: bad options (exit status 2); an export that needs Flex ops, disagrees with Keras in
            float32, or loses more than ``max_drop`` mAP (exit status 1; the last two are kept aside under
            a ``REFUSED`` name).
    """
    target = select_target(format, quantize)
    resolved, model, labels = load_keras_with_labels(model_path_or_run, command="export")
    dest = target.destination(resolved.model_path, out)
    calib, x, y = export_crops(
        resolved,
        data,
        input_shape(model),
        calibration=num_calibration if target.calibrate else 0,
        check=num_check,
        need_labels=target.tolerance is None,
    )
    keras_runner = KerasRunner(resolved.model_path, labels, model=model)
    keras_probs = batched(keras_runner, x)

    # Everything is built in a hidden folder beside the destination: a rename into place is atomic, and
    # an interrupted export leaves nothing under the final name.
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.tmp-") as tmp:
        work = Path(tmp)
        built = target.build(model, labels, work, calib)
        runner = target.load(built, labels)
        comparison = compare(runner, x, y, keras_probs)
        refused = refusal(comparison, target.tolerance, max_drop)
        if refused is not None and not force:
            aside = refused_destination(dest, refused.tag)
            target.write_labels(labels, aside)  # a refused export is as usable as a placed one
            del runner  # release the interpreter's mapping of the file before it moves
            place(built, aside, work)
            raise UserError(
                f"Export refused: {refused.reason}. Kept aside as {aside}; --force keeps it anyway", 1
            )
        latency = latency_ms(runner, x[0], latency_runs)
        keras_latency = latency_ms(keras_runner, x[0], latency_runs)
        io_quantization = runner.io_quantization
        labels_path = target.write_labels(labels, dest)
        del runner  # release the interpreter's mapping of the file before it moves
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
    )
    if verbose:
        print(result.summary())
    return result
