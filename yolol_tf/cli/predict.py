"""CLI command: predict (registered on the shared Typer app)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from yolol_tf.cli.app import app


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
    from yolol_tf.inference.predict import format_predictions, predict

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
