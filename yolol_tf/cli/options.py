"""Flags that several commands share, defined once so their names and help stay the same everywhere."""

from __future__ import annotations

from dataclasses import fields

import typer


def _default(name: str) -> float:
    """A ``TrainConfig`` default, so that help text follows it when it changes."""
    from yolol_tf.training.config import TrainConfig

    return next(f.default for f in fields(TrainConfig) if f.name == name)


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

WARMUP_EPOCHS = typer.Option(
    None,
    "--warmup-epochs",
    help="Epochs (fractions allowed) of a linear rise of the learning rate from 0 into its schedule "
    "(cosine or none); with two-phase fine-tuning, at the start of the whole-network phase. "
    f"Default {_default('warmup_epochs'):g}.",
)
EMA_DECAY = typer.Option(
    None,
    "--ema-decay",
    help="Weight averaging: momentum of the moving average of the weights that validation, best.keras and "
    f"last.keras use, e.g. 0.999 (0 = off). Default {_default('ema_decay'):g}.",
)
