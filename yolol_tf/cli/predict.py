"""CLI command: predict (registered on the shared Typer app)."""

from __future__ import annotations

from pathlib import Path

import typer

from yolol_tf.cli.app import app
from yolol_tf.cli.output import emit


@app.command("predict")
def predict_command(
    model: Path = typer.Argument(..., help="A run folder, .keras, SavedModel folder, .tflite or .onnx file."),
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

    Example: yolol-tf predict saved_models/first/best.int8.tflite photos/ --format csv --out preds.csv
    """
    from yolol_tf.inference.predict import check_format, format_predictions, predict

    check_format(format)  # before the images are classified, not after
    preds = predict(model, paths, boxes=boxes, batch_size=batch_size)
    emit(format_predictions(preds, format), out, what=f"{len(preds)} predictions")
