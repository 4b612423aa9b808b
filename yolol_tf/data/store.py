"""Converting a YOLO dataset into a crop store: TFRecord shards of raw pixels, index.csv, dataset.json.

Images are decoded and cut on all cores (``workers.py``, results in order so the output is the same
whatever the number of workers); the main process streams the crops into fixed-size shards, so memory stays
bounded whatever the dataset's size, and records each file's size and CRC32C as it writes it. The store is
built in a hidden sibling folder and renamed into place when complete, with dataset.json written last, so an
interrupted run (Ctrl-C, or SIGTERM, which is made to clean up the same way) never leaves a store that looks
complete. An unchanged dataset converted with the same options reuses the store, once its files pass the
checks of ``integrity.py``; a damaged one is converted again, saying why.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import hashlib
import json
import os
import secrets
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import crc32c

from yolol_tf.data import integrity
from yolol_tf.data.demo import cache_root
from yolol_tf.data.info import INDEX_FILE, INFO_FILE, STORE_FORMAT, STORE_VERSION, read_store_json
from yolol_tf.data.labels import parse_labels
from yolol_tf.data.records import encode_example, with_row  # noqa: F401  (encode_example: re-exported)
from yolol_tf.data.settings import DataSettings
from yolol_tf.data.tfrecord import TFRecordWriter
from yolol_tf.data.workers import Workers, convert_image, cpu_count, init_worker, workers_can_start
from yolol_tf.data.yolo import PROBLEM_KINDS, Problem, YoloDataset, find_dataset
from yolol_tf.errors import UserError
from yolol_tf.locks import exclusive

PROBLEMS_FILE = "problems.csv"
CROPS_PER_SHARD = 2048  # ~25 MB shards at size 64: large sequential reads, enough shards to interleave
_SHOWN_PROBLEMS = 20  # problems printed in the summary; all of them go to problems.csv


class _ShardWriter:
    """Writes records into ``shards/<split>-NNNNN.tfrecord``, a new shard every ``per_shard`` records.

    ``files`` gets each finished shard's entry for dataset.json: size, records and CRC32C, as written.
    """

    def __init__(self, store: Path, split: str, per_shard: int, files: dict[str, dict[str, Any]]):
        self._store, self._split, self._per_shard, self._files = store, split, per_shard, files
        self._writer: TFRecordWriter | None = None
        self.count = 0
        self.shards: list[str] = []

    def write(self, record: bytes) -> None:
        if self.count % self._per_shard == 0:
            self.close()
            name = f"shards/{self._split}-{len(self.shards):05d}.tfrecord"
            self._writer = TFRecordWriter(self._store / name)
            self.shards.append(name)
        assert self._writer is not None
        self._writer.write(record)
        self.count += 1

    def close(self) -> None:
        if self._writer is not None:
            w, self._writer = self._writer, None
            w.close()
            entry = {"bytes": w.size, "records": w.count, "crc32c": f"{w.checksum:08x}"}
            self._files[self.shards[-1]] = entry


class _TextFile:
    """A UTF-8 text file for ``csv.writer`` that keeps its size and CRC32C as it is written."""

    def __init__(self, path: Path):
        self._file = open(path, "wb", buffering=1 << 16)
        self.size, self.checksum = 0, 0

    def write(self, text: str) -> int:
        data = text.encode("utf-8")
        self._file.write(data)
        self.size += len(data)
        self.checksum = crc32c.crc32c(data, self.checksum)
        return len(text)

    def entry(self) -> dict[str, Any]:
        """The file's entry for dataset.json."""
        return {"bytes": self.size, "crc32c": f"{self.checksum:08x}"}

    def __enter__(self) -> _TextFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()


def fingerprint(dataset: YoloDataset, options: dict[str, Any]) -> str:
    """A hash of the options, the class names, every image's path, size and mtime, and every label file.

    Label files are hashed by content: they are small, and an edit that keeps a file's size and mtime (a
    class id changed in place, a tool that restores times, a checkout) must not reuse crops labelled from
    the old text. Images are keyed by path, size and mtime only: hashing them would read the whole dataset
    at every reuse (gigabytes, a good part of a conversion), and an image edited in place to the same size
    with its mtime restored is far rarer than a relabelled box.
    """
    h = hashlib.sha256(
        json.dumps([STORE_FORMAT, STORE_VERSION, options, dataset.names], sort_keys=True).encode()
    )
    labels: dict[str, str] = {}  # a label file read by two splits is read once
    for split, items in dataset.splits.items():
        for item in items:
            try:
                st = os.stat(item.image)
                h.update(f"{split}\0{item.image}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{split}\0{item.image}\0-\n".encode())
            if item.label not in labels:
                labels[item.label] = _file_hash(item.label)
            h.update(f"{split}\0{item.label}\0{labels[item.label]}\n".encode())
    for p in dataset.problems:
        h.update(f"{p}\n".encode())
    return h.hexdigest()


def _file_hash(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return "-"  # missing (an image without labels) or unreadable (reported when converting)


def _reuse_problem(out: Path, fp: str, dataset: YoloDataset, options: dict[str, Any]) -> str | None:
    """Why the store at ``out`` cannot be reused for ``fp``: "" when there is none, None when it can be.

    A store is reused only when it was converted from this dataset with these options, its dataset.json
    still says so, and every file is there, of the size and CRC32C it was written with (see
    :mod:`yolol_tf.data.integrity` for the cost).
    """
    if not (out / INFO_FILE).is_file():
        return ""
    try:
        meta = read_store_json(out, check_files=False)
    except UserError as e:
        return e.message
    if meta["version"] != STORE_VERSION:
        return f"it was written by an older yolol-tf (store version {meta['version']})"
    if meta.get("fingerprint") != fp:
        return "the dataset or the options changed"
    expected = {"names": dataset.names, "num_classes": len(dataset.names), "size": options["size"],
                "mode": options["mode"], "options": options}  # fmt: skip
    for key, value in expected.items():
        if meta.get(key) != value:
            return f"dataset.json says {key} is {meta.get(key)!r}, the dataset and options give {value!r}"
    return integrity.damage(out, meta) or integrity.checksum_damage(out, meta)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Makes SIGTERM (``kill``, a scheduler's stop) interrupt the conversion as Ctrl-C does.

    By default SIGTERM ends the process at once: no cleanup, so the partial folder and the lock stay behind.
    Raising KeyboardInterrupt runs the same cleanup as Ctrl-C: the workers are terminated (or are already
    gone, when the signal went to the whole process group) and the partial folder removed. A handler
    someone else installed is left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers can only be set from the main thread
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"terminated (signal {signum})")

    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _remove_stale(out: Path) -> None:
    """Deletes partial (and replaced) folders left by runs of this store that were killed."""
    leftovers = [*out.parent.glob(f".{out.name}.partial-*"), *out.parent.glob(f".{out.name}.old-*")]
    for tmp in leftovers:
        try:
            pid = int(tmp.name.rsplit("-", 2)[-2])
            os.kill(pid, 0)  # still running: leave it alone
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            pass


def prepare(
    data: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    settings: DataSettings | None = None,
    strict: bool = False,
    force: bool = False,
    workers: int | None = None,
    progress: bool = True,
    **options: Any,
) -> Path:
    """Converts a YOLO dataset into a crop store and returns the store's folder.

    Args:
        data: a data.yaml, or a dataset folder.
        out: the store folder; None means a cache folder keyed by the dataset's path and the options.
        settings: how to cut the samples (size, context, min_visible, min_box, mode; see
            :class:`~yolol_tf.data.settings.DataSettings`); its ``data`` and ``val`` are not used here.
        **options: settings given one by one (``size=32``), over ``settings``.
        strict: raise on the first data problem instead of converting what is sound.
        force: convert again even when the store could be reused.
        workers: processes decoding images; None means one per CPU core, 1 means no pool.
        progress: show a progress bar.

    Raises:
        UserError: for a missing dataset, a bad option, an output folder that is not a store, or (with
            ``strict``) the first problem in the data.
    """
    settings = DataSettings.of(settings, **options)
    settings.check()
    dataset = find_dataset(data)
    options = settings.crop_options()
    fp = fingerprint(dataset, options)
    if out is None:
        key = hashlib.sha256(json.dumps([str(dataset.source), options], sort_keys=True).encode())
        out = cache_root() / "stores" / f"{dataset.root.name}-{key.hexdigest()[:12]}"
    out = Path(out).expanduser().absolute()
    if strict and dataset.problems:
        raise UserError(f"{dataset.problems[0]} (--strict)")
    with _sigterm_interrupts(), exclusive(out, what="conversion"):
        return _build(out, dataset, options, fp, strict, force, workers, progress)


def _build(
    out: Path,
    dataset: YoloDataset,
    options: dict[str, Any],
    fp: str,
    strict: bool,
    force: bool,
    workers: int | None,
    progress: bool,
) -> Path:
    """Reuses the store at ``out`` if it is whole and made for ``fp``, else converts into it (lock held)."""
    why = "--force" if force and (out / INFO_FILE).is_file() else _reuse_problem(out, fp, dataset, options)
    if why is None:
        # A store converted without --strict may hold problems that --strict must still refuse.
        recorded = read_problems(out) if strict else []
        if recorded:
            raise UserError(f"{recorded[0]} (--strict; recorded when {out} was converted)")
        print(f"Reusing the store {out} (dataset and options unchanged)", file=sys.stderr)
        return out
    if why:
        print(f"Rebuilding the store {out}: {why}", file=sys.stderr)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / INFO_FILE).exists())):
        raise UserError(
            f"--out exists and is not a yolol-tf store; refusing to overwrite it. Received: {out}"
        )
    _remove_stale(out)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    (tmp / "shards").mkdir(parents=True)
    try:
        summary = _write_store(tmp, dataset, options, fp, strict, workers, progress)
        _swap(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _print_summary(out, dataset, summary)
    return out


def _write_store(
    tmp: Path,
    dataset: YoloDataset,
    options: dict[str, Any],
    fp: str,
    strict: bool,
    workers: int | None,
    progress: bool,
) -> dict[str, Any]:
    """Writes shards, index.csv, problems.csv and finally dataset.json into ``tmp``."""
    from tqdm import tqdm

    num_classes = len(dataset.names)
    max_objects = _max_objects(dataset, num_classes)
    worker_options = {**options, "num_classes": num_classes, "max_objects": max_objects}
    total = sum(len(items) for items in dataset.splits.values())
    workers = min(workers or cpu_count(), total)
    pool = None
    if workers > 1 and workers_can_start():
        pool = Workers(workers, worker_options)
    else:
        init_worker(worker_options, pooled=False)
    finished = False
    problems = list(dataset.problems)
    splits: dict[str, Any] = {}
    files: dict[str, dict[str, Any]] = {}
    skipped_small, row = 0, 0
    try:
        with _TextFile(tmp / INDEX_FILE) as index_file:
            index = csv.writer(index_file, lineterminator="\n")
            index.writerow(["split", "image", "box", "x1", "y1", "x2", "y2", "label_ids"])
            for split, items in dataset.splits.items():
                writer = _ShardWriter(tmp, split, CROPS_PER_SHARD, files)
                bar = tqdm(total=len(items), desc=f"prepare {split}", unit="img", disable=not progress)
                try:
                    results = map(convert_image, items) if pool is None else pool.results(items)
                    for item, result in zip(items, results, strict=True):
                        if strict and result.problems:
                            raise UserError(f"{result.problems[0]} (--strict)")
                        problems += result.problems
                        skipped_small += result.skipped_small
                        for sample, features in result.crops:
                            box = "" if sample.box is None else sample.box
                            labels = ";".join(map(str, sample.label_ids))
                            index.writerow([split, item.rel, box, *sample.window, labels])
                            writer.write(with_row(features, row))
                            row += 1
                        bar.update()
                finally:
                    writer.close()
                    bar.close()
                if writer.count:
                    splits[split] = {"images": len(items), "crops": writer.count, "shards": writer.shards}
        finished = True
    finally:
        if pool is not None:
            pool.close(finished=finished)
    files[INDEX_FILE] = index_file.entry()
    # Splits that share images (a val that is the train) find the same problems: each is reported once.
    problems = list(dict.fromkeys(problems))
    files[PROBLEMS_FILE] = _write_problems(tmp / PROBLEMS_FILE, problems)
    info = {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "names": dataset.names,
        "num_classes": num_classes,
        "size": options["size"],
        "mode": options["mode"],
        "options": options,
        "source": str(dataset.source),
        "splits": splits,
        "problems": len(problems),
        "skipped_small": skipped_small,
        "fingerprint": fp,
        "max_objects": max_objects,
        "files": files,
    }
    # Written last: its presence marks the store complete.
    (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return {"splits": splits, "problems": problems, "skipped_small": skipped_small}


def _max_objects(dataset: YoloDataset, num_classes: int) -> int:
    """The rows of every record's geometry: the most boxes one image has (at least 1).

    A crop shows at most its image's boxes. Known before the first record is written, so every record has
    one length and a shard's size follows from its record count (``records.shard_bytes``); found from the
    label files alone, which are small.
    """
    labels = {item.label for items in dataset.splits.values() for item in items}
    return max([1, *(len(parse_labels(label, num_classes)[0]) for label in labels)])


def _write_problems(path: Path, problems: list[Problem]) -> dict[str, Any]:
    """Writes problems.csv and returns its entry for dataset.json."""
    with _TextFile(path) as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["kind", "file", "line", "value", "message"])
        for p in problems:
            w.writerow([p.kind, p.file, p.line or "", p.value, p.message])
    return f.entry()


def read_problems(store: str | os.PathLike) -> list[Problem]:
    """The problems a conversion recorded in ``store/problems.csv``."""
    with open(Path(store) / PROBLEMS_FILE, newline="", encoding="utf-8") as f:
        return [
            Problem(r["kind"], r["file"], int(r["line"]) if r["line"] else None, r["value"], r["message"])
            for r in csv.DictReader(f)
        ]


def _swap(tmp: Path, out: Path) -> None:
    """Moves the finished store into place; a previous store is removed only once the new one is there."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _print_summary(out: Path, dataset: YoloDataset, summary: dict[str, Any]) -> None:
    splits = summary["splits"]
    counts = ", ".join(f"{s}: {v['images']} images, {v['crops']} crops" for s, v in splits.items())
    print(f"Wrote {out} ({counts or 'no samples'})", file=sys.stderr)
    if summary["skipped_small"]:
        print(f"Skipped {summary['skipped_small']} boxes smaller than --min-box", file=sys.stderr)
    problems = summary["problems"]
    if not problems:
        return
    by_kind = collections.Counter(p.kind for p in problems)
    kinds = ", ".join(f"{PROBLEM_KINDS.get(k, k)}: {by_kind[k]}" for k in PROBLEM_KINDS if k in by_kind)
    print(f"{len(problems)} problems in the data ({kinds}); what was sound was converted:", file=sys.stderr)
    for p in problems[:_SHOWN_PROBLEMS]:
        print(f"  {p}", file=sys.stderr)
    if len(problems) > _SHOWN_PROBLEMS:
        print(f"  ... and {len(problems) - _SHOWN_PROBLEMS} more", file=sys.stderr)
    print(f"All problems are listed in {out / PROBLEMS_FILE}", file=sys.stderr)
