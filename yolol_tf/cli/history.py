"""CLI command: history (registered on the shared Typer app)."""

from __future__ import annotations

from pathlib import Path

import typer

from yolol_tf.cli.app import app
from yolol_tf.cli.output import emit


@app.command("history")
def history_command(
    run: Path = typer.Argument(..., metavar="RUN", help="A run folder (or its logs/ folder)."),
    out: Path | None = typer.Option(None, "--out", help="Write the table as CSV to this file."),
    all_scalars: bool = typer.Option(
        False, "--all", help="Every scalar, not only the per-epoch ones (batch-level steps included)."
    ),
) -> None:
    """Print a run's TensorBoard scalars as a table, one row per epoch, or write them as CSV.

    Example: yolol-tf history saved_models/first --out history.csv
    """
    import pandas as pd

    from yolol_tf.training.history import read_history

    table = read_history(run, epoch_only=not all_scalars)
    if out is not None:
        emit(table.to_csv(), out)
        return
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.max_rows", None):
        typer.echo(table.to_string(float_format=lambda v: f"{v:.4g}"))
