"""CLI command: export (registered on the shared Typer app)."""

from __future__ import annotations

from pathlib import Path

import typer

from yolol_tf.cli.app import app


@app.command("export")
def export_command(
    model: Path = typer.Argument(..., help="A run folder (its best.keras) or a .keras file."),
    format: str = typer.Option(
        "savedmodel", "--format", "-f", help="savedmodel (TF Serving), tflite (phones) or onnx (onnxruntime)."
    ),
    quantize: str = typer.Option("none", "--quantize", "-q", help="TFLite only: none, float16 or int8."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Destination file or folder [default: beside the model]."
    ),
    data: str | None = typer.Option(
        None, "--data", help="Crops to calibrate and check on [default: the run's config.yaml data]."
    ),
    max_drop: float = typer.Option(
        0.02, "--max-drop", help="Largest mAP loss a float16/int8 export may show."
    ),
    force: bool = typer.Option(False, "--force", help="Keep an export that fails its check anyway."),
    recover: bool = typer.Option(
        True,
        "--recover/--no-recover",
        help="int8 that loses more than --max-drop: keep the layers responsible in float and check again.",
    ),
    num_calibration: int = typer.Option(
        200, "--num-calibration", help="Training crops for int8 calibration."
    ),
) -> None:
    """Export a model for TensorFlow Serving, phones or onnxruntime, checked against the Keras model first.

    The export takes raw pixels and returns per-class probabilities; labels.json and labels.txt travel
    with it (inside a .tflite or .onnx file too). It is compared with the Keras model on validation crops
    before it is written: float32 (SavedModel, TFLite, ONNX) within 1e-4, float16/int8 within --max-drop
    mAP, their thresholds tuned on their own outputs. An int8 export that loses more keeps its worst
    layers in float (the summary names them); if nothing passes it is kept aside under a REFUSED name
    and the command exits with status 1. ONNX needs: pip install "yolol-tf[onnx]".

    Example: yolol-tf export saved_models/first --format tflite --quantize int8
    """
    from yolol_tf.inference.export import export

    export(
        model,
        format,
        quantize=quantize,
        out=out,
        data=data,
        max_drop=max_drop,
        force=force,
        recover=recover,
        num_calibration=num_calibration,
    )
