"""Flags that several commands share, defined once so their names and help stay the same everywhere."""

from __future__ import annotations

import typer

DATA = typer.Option(
    None,
    "--data",
    help="YOLO data.yaml or dataset folder, a prepared store, or a Sign-MNIST CSV. "
    "Default: the embedded demo dataset.",
)
VAL = typer.Option(None, "--val", help="Sign-MNIST test CSV, reported as 'test' only.")
SIZE = typer.Option(
    None,
    "--size",
    help="Crop side in pixels for a YOLO dataset (default 64). A store or CSV keeps its own size; "
    "a different size given here is an error.",
)
