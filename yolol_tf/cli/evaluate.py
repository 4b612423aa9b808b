"""CLI command: evaluate (registered on the shared Typer app)."""

from __future__ import annotations

from pathlib import Path

import typer

from yolol_tf.cli.app import app
from yolol_tf.cli.output import emit


@app.command("evaluate")
def evaluate_command(
    model: str = typer.Argument(
        ...,
        metavar="RUN|MODEL",
        help="A run folder, a .keras file, or an export (SavedModel folder, .tflite or .onnx file).",
    ),
    data: str | None = typer.Option(
        None, "--data", help="Store, YOLO dataset or Sign-MNIST CSV (default: the data the run trained on)."
    ),
    split: str = typer.Option("test", "--split", help="Which split to evaluate: test, val or train."),
    fmt: str = typer.Option("table", "--format", help="table, json or csv (the per-class table)."),
    out: Path | None = typer.Option(
        None, "--out", help="Write the report to this file instead of printing it."
    ),
    batch_size: int = typer.Option(64, "--batch-size", help="Samples per prediction batch."),
) -> None:
    """Evaluate a model: mAP, F1 (micro, macro, samples), precision, recall, Hamming loss, exact match.

    Figures are given at the per-class thresholds tuned on the validation split (from labels.json, or
    those that travel with an export) and at 0.5, with a per-class table; a single-label model also
    reports accuracy. An export is evaluated on the data of the run folder it sits in (or --data).

    Example: yolol-tf evaluate saved_models/first --split test --format json --out metrics.json
    """
    from yolol_tf.inference.evaluate import check_format, evaluate, format_report

    check_format(fmt)  # before the evaluation, not after it
    result = evaluate(model, data, split, batch_size=batch_size)
    emit(format_report(result, fmt), out)
