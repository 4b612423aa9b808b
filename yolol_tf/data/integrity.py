"""Is a store whole? Its files checked against dataset.json, and read errors named by store and shard.

dataset.json (store version 2) records, under ``files``, each file's size and CRC32C and each shard's
record count, all taken while the store was written. Two depths of check:

- :func:`damage` costs one ``stat`` a file: every file is there with the size dataset.json gives, the
  shards of a split hold its crops, and each shard is exactly as large as its records are at the store's
  crop size, class count and ``max_objects`` (a record's length is fixed by those and its row: ``records.shard_bytes``).
  A truncated shard, a deleted index.csv, or a dataset.json edited to another size or number of classes
  is found before TensorFlow reads a byte. ``read_store_json`` runs it, so ``load``, ``read_info`` and
  ``open_data`` refuse a damaged store in one line.
- :func:`checksum_damage` reads every byte (CRC32C runs at ~6 GB/s here, so the disk sets the pace;
  ``benchmarks/bench_store_verify.py``). ``prepare`` runs it before reusing a store: at most the cost of
  one epoch's reading, for the promise that a reused store is the one that was written.

A record damaged in place (same size, other bytes) gets past :func:`damage`, and TensorFlow raises
``DataLossError`` mid-epoch without naming the file. :func:`read_error` turns that error into one line
naming the store and the shard, found with our own reader; the CLI applies it to whatever a command
raises (a notebook can too), as the error surfaces from ``model.fit`` far from the pipeline.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from yolol_tf.data.info import INDEX_FILE
from yolol_tf.data.records import shard_bytes
from yolol_tf.data.tfrecord import CorruptRecordError, file_crc32c, verify
from yolol_tf.errors import UserError

# Shards handed to tf.data in this process, by store (most recent last): where a read error came from.
_reading: dict[Path, list[str]] = {}


def damage(store: str | Path, meta: dict[str, Any]) -> str | None:
    """What is wrong with a store's files, judged by their sizes against dataset.json, or None.

    Args:
        store: the store folder.
        meta: its dataset.json, already checked for its keys (``info.read_store_json(check=False)``).
    """
    try:
        return _damage(Path(store), meta)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        return f"dataset.json is malformed ({type(e).__name__}: {e})"


def _damage(store: Path, meta: dict[str, Any]) -> str | None:
    size, num_classes = int(meta["size"]), int(meta["num_classes"])
    max_objects = int(meta.get("max_objects", 0))  # stores before version 3 hold no geometry
    files: dict[str, Any] | None = meta["files"] if int(meta["version"]) >= 2 else None
    if files is None:  # version 1 recorded no sizes: the files must be there, and the splits' bytes add up
        for name in [INDEX_FILE, *(s for entry in meta["splits"].values() for s in entry["shards"])]:
            if not (store / name).is_file():
                return f"{name} is missing"
    else:
        if INDEX_FILE not in files:
            return f"dataset.json lists no {INDEX_FILE}"
        for name, entry in files.items():
            problem = _size_problem(store / name, name, int(entry["bytes"]))
            if problem:
                return problem
    row = 0  # records are numbered by their index.csv row, across splits in order
    for split, entry in meta["splits"].items():
        crops = int(entry["crops"])
        what = f"{size}x{size} px crops with {num_classes} classes"
        if files is None:
            held = sum((store / shard).stat().st_size for shard in entry["shards"])
            expected = shard_bytes(size, num_classes, row, crops, max_objects)
            if held != expected:
                return f"the shards of split {split!r} are {held} bytes, but {crops} {what} take {expected}"
        else:
            records = 0
            for shard in entry["shards"]:
                if shard not in files:
                    return f"dataset.json lists no size for {shard}"
                n, held = int(files[shard]["records"]), int(files[shard]["bytes"])
                expected = shard_bytes(size, num_classes, row + records, n, max_objects)
                if held != expected:
                    return f"{shard} is {held} bytes, but {n} {what} take {expected}"
                records += n
            if records != crops:
                return f"dataset.json gives split {split!r} {crops} crops, but its shards hold {records}"
        row += crops
    return None


def _size_problem(path: Path, name: str, expected: int) -> str | None:
    try:
        held = path.stat().st_size
    except FileNotFoundError:
        return f"{name} is missing"
    except OSError as e:
        return f"{name} cannot be read ({e.strerror or e})"
    return None if held == expected else f"{name} is {held} bytes, dataset.json says {expected}"


def checksum_damage(store: str | Path, meta: dict[str, Any]) -> str | None:
    """The first file whose CRC32C differs from dataset.json's, or None (reads every file; version 2).

    Args:
        store: the store folder; :func:`damage` should have found nothing first.
        meta: its dataset.json.
    """
    for name, entry in meta.get("files", {}).items():
        try:
            value = f"{file_crc32c(Path(store) / name):08x}"
        except OSError as e:
            return f"{name} cannot be read ({e.strerror or e})"
        if value != entry.get("crc32c"):
            return f"{name} fails its checksum (CRC32C {value}, dataset.json says {entry.get('crc32c')})"
    return None


def damaged(store: str | Path, meta: dict[str, Any], problem: str) -> UserError:
    """The one-line error for a damaged store: what is wrong, and the command that converts it again."""
    source = shlex.quote(str(meta.get("source") or "DATA"))
    return UserError(
        f"The store {store} is damaged: {problem}. "
        f"Run `yolol-tf prepare {source} --out {shlex.quote(str(store))} --force` to convert it again."
    )


def note_reading(store: str | Path, shards: list[str]) -> None:
    """Remembers that tf.data reads these shards of ``store``, for :func:`read_error` to look in."""
    store = Path(store)
    known = _reading.pop(store, [])
    _reading[store] = list(dict.fromkeys([*known, *shards]))


def read_error(error: BaseException) -> UserError | None:
    """A TensorFlow read error from a store (``DataLossError``) as a one-line error naming store and shard.

    TensorFlow's message gives a byte offset but not the file. The shards this process has read are checked
    with our own reader, which names the first bad one and the offset of its bad record.

    Returns:
        None for any other error, or when no store was read in this process.

    Example:
        >>> try:  # doctest: +SKIP
        ...     model.fit(load(store, "train", 32))
        ... except Exception as e:
        ...     raise (read_error(e) or e) from None
    """
    tf = sys.modules.get("tensorflow")
    if tf is None or not isinstance(error, tf.errors.DataLossError) or not _reading:
        return None
    for store, shards in reversed(_reading.items()):
        meta = {"source": _source(store)}
        for shard in shards:
            try:
                verify(store / shard)
            except CorruptRecordError as e:
                return damaged(store, meta, f"{shard}: {e.problem} at byte offset {e.offset}")
            except UserError:
                return damaged(store, meta, f"{shard} cannot be read")
    # Not found again (the file changed back, or the fault was in the disk): name what was being read.
    store = next(reversed(_reading))
    what = re.sub(r"\{\{.*?\}\}\s*|\s*\[\[.*|\s*\[Op:.*", "", str(error)).strip() or type(error).__name__
    return damaged(store, {"source": _source(store)}, f"reading it failed ({what})")


def _source(store: Path) -> str:
    """The dataset a store was converted from, for the command that converts it again."""
    try:
        return str(json.loads((store / "dataset.json").read_text(encoding="utf-8")).get("source") or "DATA")
    except (OSError, ValueError, AttributeError):
        return "DATA"
