"""CLI command: doctor (registered on the shared Typer app)."""

from __future__ import annotations

import typer

from yolol_tf.cli.app import app
from yolol_tf.cli.output import emit


@app.command("doctor")
def doctor_command(
    fmt: str = typer.Option(
        "text", "--format", help="text, or json (only the JSON document on stdout; progress on stderr)."
    ),
    check: bool = typer.Option(
        True, "--check/--no-check", help="Run the device comparison (a few seconds per device)."
    ),
) -> None:
    """Print what a bug report needs, and check that each GPU computes what the CPU computes.

    Lists the versions (Python, TensorFlow, Keras, keras-tuner, tensorflow-metal, numpy, the OS), the
    devices TensorFlow sees, the CPU and the precision and XLA that `train` picks here, then runs one
    fixed training step on the CPU and on each GPU and compares the outputs and updated weights. Exit
    status 1 when a device disagrees or TensorFlow fails to import.

    Example: yolol-tf doctor --format json > doctor.json
    """
    from yolol_tf.doctor.report import check_format, diagnose, format_report

    check_format(fmt)
    report = diagnose(check=check, progress=lambda line: typer.echo(line, err=True))
    emit(format_report(report, fmt), None)
    if not report.ok:
        raise typer.Exit(code=1)
