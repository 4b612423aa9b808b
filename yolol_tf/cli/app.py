"""The Typer application that every command module registers on."""

from __future__ import annotations

import typer

from yolol_tf.models import DEFAULT_MODEL

app = typer.Typer(
    name="yolol-tf",
    help=(
        "Turn YOLO object-detection datasets into multi-label image classifiers, and ship them to phones.\n\n"
        f"Start with `yolol-tf train {DEFAULT_MODEL}`: with no --data it trains on the embedded demo dataset."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
