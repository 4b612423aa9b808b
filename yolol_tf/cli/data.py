"""CLI commands: data (registered on the shared Typer app)."""

from __future__ import annotations

from yolol_tf.cli.app import app  # noqa: F401
