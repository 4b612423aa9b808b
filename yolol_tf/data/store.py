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

from yolol_tf.data.demo import cache_root
from yolol_tf.data.info import INDEX_FILE, INFO_FILE, STORE_FORMAT, STORE_VERSION
from yolol_tf.data.labels import parse_labels
from yolol_tf.data.records import encode_example, with_row  # noqa: F401  (encode_example: re-exported)
from yolol_tf.data.settings import DataSettings
from yolol_tf.data.store_files import CROPS_PER_SHARD, ShardWriter, TextFile
from yolol_tf.data.store_reuse import fingerprint, reuse_problem
from yolol_tf.data.workers import Workers, convert_image, cpu_count, init_worker, workers_can_start
from yolol_tf.data.yolo import PROBLEM_KINDS, Problem, YoloDataset, find_dataset
from yolol_tf.errors import UserError
from yolol_tf.locks import exclusive

PROBLEMS_FILE = "problems.csv"
_SHOWN_PROBLEMS = 20  # problems printed in the summary; all of them go to problems.csv


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
    why = "--force" if force and (out / INFO_FILE).is_file() else reuse_problem(out, fp, dataset, options)
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
        with TextFile(tmp / INDEX_FILE) as index_file:
            index = csv.writer(index_file, lineterminator="\n")
            index.writerow(["split", "image", "box", "x1", "y1", "x2", "y2", "label_ids"])
            for split, items in dataset.splits.items():
                writer = ShardWriter(tmp, split, CROPS_PER_SHARD, files)
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
    with TextFile(path) as f:
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
