"""The ``yolol-tf`` command line: a thin layer over the Python API.

Each module here registers its commands on :data:`yolol_tf.cli.app.app` and imports the heavy parts
(TensorFlow) inside the command, so ``yolol-tf --help`` answers at once. A :class:`UserError` from any
command is printed as one line on stderr with its exit status, never as a traceback.
"""

from __future__ import annotations

import os
import sys

# Registration order is the order of `yolol-tf --help`.
from yolol_tf.cli import data as _data  # noqa: E402,F401
from yolol_tf.cli import doctor as _doctor  # noqa: E402,F401
from yolol_tf.cli import evaluate as _evaluate  # noqa: E402,F401
from yolol_tf.cli import export as _export  # noqa: E402,F401
from yolol_tf.cli import history as _history  # noqa: E402,F401
from yolol_tf.cli import predict as _predict  # noqa: E402,F401
from yolol_tf.cli import train as _train  # noqa: E402,F401
from yolol_tf.cli import tune as _tune  # noqa: E402,F401
from yolol_tf.cli.app import app
from yolol_tf.errors import UserError


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI and returns its exit status (the console script passes it to ``sys.exit``)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        app(args=argv, prog_name="yolol-tf")
    except SystemExit as e:  # Typer's standalone mode ends every command with one
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except UserError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # an output folder that cannot be written, a full disk: the user's to fix
        where = f": {e.filename}" if e.filename else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        # TensorFlow's DataLossError from a damaged store surfaces in model.fit, far from the pipeline.
        from yolol_tf.data.integrity import read_error

        error = read_error(e)
        if error is None:
            raise
        print(f"error: {error.message}", file=sys.stderr)
        return error.exit_code
    return 0


__all__ = ["app", "main"]
