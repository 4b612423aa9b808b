"""Where an export's files go: refused names, labels files, the atomic move into place, sizes.

An export is built in a hidden folder beside its destination and renamed into place only once it has
passed its check, so an interrupted or refused export never leaves anything under the final name.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from yolol_tf.config import atomic_write_text
from yolol_tf.errors import UserError
from yolol_tf.locks import exclusive
from yolol_tf.runs import Labels


@contextmanager
def work_folder(dest: Path) -> Iterator[Path]:
    """The hidden folder an export to ``dest`` is built in, with the destination locked meanwhile.

    Work folders that killed exports left beside ``dest`` are removed first: with the lock held, no other
    export to ``dest`` can be using one. A full disk while writing becomes one message, not a traceback.
    """
    with exclusive(dest, what="export"):
        for stale in dest.parent.glob(f".{dest.name}.tmp-*"):
            print(f"Removing {stale}, left by an export that was interrupted", file=sys.stderr)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.tmp-") as tmp:
                yield Path(tmp)
        except Exception as e:
            if not _disk_full(e):
                raise
            raise UserError(
                f"No space left on the device while writing the export to {dest.parent}: free some space "
                "and export again (nothing was placed under the final name)",
                exit_code=1,
            ) from None


def _disk_full(error: Exception) -> bool:
    """An OSError of a full disk, or TensorFlow's ResourceExhaustedError for one (its writers raise that)."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return type(error).__name__ == "ResourceExhaustedError" and "No space left" in str(error)


def refused_destination(dest: Path, reason: str) -> Path:
    """``model.int8.tflite`` -> ``model.int8.REFUSED-map-drop-0.034.tflite``."""
    suffix = dest.suffix
    return dest.with_name(f"{dest.name[: len(dest.name) - len(suffix)]}.REFUSED-{reason}{suffix}")


def make_parent(dest: Path) -> None:
    """Creates the folder ``dest`` goes into.

    Raises:
        UserError: it cannot be created.
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {dest}: cannot create the folder {dest.parent} ({e.strerror or e})") from None


def write_labels(labels: Labels, json_path: Path, txt_path: Path) -> None:
    """``labels.json`` (names, thresholds, activation, input shape) and ``labels.txt`` (a name a line)."""
    labels.save(json_path)
    atomic_write_text(txt_path, "".join(f"{n}\n" for n in labels.names))


def place(src: Path, dest: Path, work: Path) -> None:
    """Moves a finished export under its final name; an older one there goes away only afterwards.

    Args:
        src: the finished file or folder, inside ``work``.
        dest: its final name.
        work: the hidden work folder, removed after the export (with any older export moved into it).
    """
    if dest.is_dir():
        os.rename(dest, work / "previous")  # removed with the work folder
    os.replace(src, dest)


def size_bytes(path: Path) -> int:
    """A file's size, or the sum of a folder's files."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size
