"""Where a command's text goes: printed on stdout, or written atomically to ``--out``."""

from __future__ import annotations

from pathlib import Path

import typer


def emit(text: str, out: Path | None, *, what: str | None = None) -> None:
    """Prints ``text``, or writes it to ``out`` (atomically) and says where on stderr.

    Text that does not end with a newline gets one.

    Args:
        text: what the command produced.
        out: the ``--out`` file; None prints.
        what: what was written, for the message (``wrote 8 predictions to preds.csv``); None names only
            the file (``wrote preds.csv``).
    """
    if text and not text.endswith("\n"):
        text += "\n"
    if out is None:
        typer.echo(text, nl=False)
        return
    from yolol_tf.config import atomic_write_text

    atomic_write_text(out, text)
    typer.echo(f"wrote {what} to {out}" if what else f"wrote {out}", err=True)
