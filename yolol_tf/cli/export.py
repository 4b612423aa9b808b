"""CLI commands: export, predict (registered on the shared Typer app)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from yolol_tf.cli.app import app


@app.command("export")
def export_command(
    model: Path = typer.Argument(..., help="A run folder (its best.keras) or a .keras file."),
    format: str = typer.Option("savedmodel", "--format", "-f", help="savedmodel (TF Serving) or tflite."),
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
    num_calibration: int = typer.Option(
        200, "--num-calibration", help="Training crops for int8 calibration."
    ),
) -> None:
    """Export a model for TensorFlow Serving or phones, checked against the Keras model first.

    The export takes raw pixels and returns per-class probabilities; labels.json and labels.txt travel
    with it (inside a .tflite file too). It is compared with the Keras model on validation crops before it
    is written: float32 within 1e-4, float16/int8 within --max-drop mAP, or it is kept aside under a
    REFUSED name and the command exits with status 1.

    Example: yolol-tf export saved_models/cnn-demo --format tflite --quantize int8
    """
    from yolol_tf.export import export

    export(
        model,
        format,
        quantize=quantize,
        out=out,
        data=data,
        max_drop=max_drop,
        force=force,
        num_calibration=num_calibration,
    )


@app.command("predict")
def predict_command(
    model: Path = typer.Argument(..., help="A run folder, .keras, SavedModel folder or .tflite file."),
    paths: list[Path] = typer.Argument(..., help="Images or folders (searched recursively)."),
    boxes: Path | None = typer.Option(
        None, "--boxes", help="Folder of YOLO label files: classify each box instead of whole images."
    ),
    format: str = typer.Option("table", "--format", "-f", help="table, json or csv."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write the predictions here instead of stdout."
    ),
    batch_size: int = typer.Option(32, "--batch-size", help="Crops per model call."),
) -> None:
    """Classify images (whole, or box by box) and list the classes above their thresholds.

    Unreadable images are reported on stderr and skipped.

    Example: yolol-tf predict saved_models/cnn-demo/best.int8.tflite photos/ --format csv --out preds.csv
    """
    from yolol_tf.config import atomic_write_text
    from yolol_tf.predict import format_predictions, predict

    if format not in ("table", "json", "csv"):
        from yolol_tf.errors import UserError

        raise UserError(f"--format must be table, json or csv. Received: format={format!r}")
    preds = predict(model, paths, boxes=boxes, batch_size=batch_size)
    text = format_predictions(preds, format)
    if out is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(out, text)
        print(f"wrote {len(preds)} predictions to {out}", file=sys.stderr)
