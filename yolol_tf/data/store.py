"""Converting a YOLO dataset into a crop store: TFRecord shards of raw pixels, index.csv, dataset.json.

Images are decoded and cut on all cores (a process pool, results taken in order so the output is the same
whatever the number of workers); the main process streams the crops into fixed-size shards, so memory stays
bounded whatever the dataset's size. The store is built in a hidden sibling folder and renamed into place
when complete, with dataset.json written last, so an interrupted run never leaves a store that looks
complete. An unchanged dataset converted with the same options reuses the store.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import json
import multiprocessing
import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolol_tf.data.crops import Sample, cut, multi_hot, plan_crops, plan_image
from yolol_tf.data.demo import cache_root
from yolol_tf.data.images import read_image
from yolol_tf.data.settings import DataSettings
from yolol_tf.data.tfrecord import TFRecordWriter
from yolol_tf.data.yolo import PROBLEM_KINDS, ImageItem, Problem, YoloDataset, find_dataset, parse_labels
from yolol_tf.errors import UserError
from yolol_tf.locks import exclusive

FORMAT, VERSION = "yolol-tf-store", 1
CROPS_PER_SHARD = 2048  # ~25 MB shards at size 64: large sequential reads, enough shards to interleave
_SHOWN_PROBLEMS = 20  # problems printed in the summary; all of them go to problems.csv


@dataclass
class _ImageResult:
    """What a worker made of one image."""

    problems: list[Problem] = field(default_factory=list)
    crops: list[tuple[Sample, bytes]] = field(default_factory=list)  # with encode_features' bytes
    skipped_small: int = 0


_OPTIONS: dict[str, Any] = {}  # set in each worker by _init_worker, so tasks carry only paths


def _init_worker(options: dict[str, Any], pooled: bool = True) -> None:
    if pooled:
        import cv2

        cv2.setNumThreads(1)  # parallelism comes from the processes; threads would only contend
    _OPTIONS.clear()
    _OPTIONS.update(options)


def _convert_image(item: ImageItem) -> _ImageResult:
    """Parses an image's labels, decodes it and cuts its crops (runs in a worker)."""
    o = _OPTIONS
    boxes, problems = parse_labels(item.label, o["num_classes"])
    result = _ImageResult(problems)
    try:
        image = read_image(item.image)
    except UserError as e:
        result.problems.append(Problem("image", item.image, None, item.rel, e.message.split(": ", 1)[-1]))
        return result
    except Exception as e:  # a decoder failing on a malformed file must not stop the conversion
        result.problems.append(Problem("image", item.image, None, item.rel, f"cannot decode ({e})"))
        return result
    height, width = image.shape[:2]
    if o["mode"] == "image":
        samples = [plan_image(boxes, width, height)]
    else:
        samples, result.skipped_small = plan_crops(
            boxes, width, height, context=o["context"], min_visible=o["min_visible"], min_box=o["min_box"]
        )
    for s in samples:
        pixels = cut(image, s.window, o["size"]).tobytes()
        result.crops.append((s, encode_features(pixels, multi_hot(s.label_ids, o["num_classes"]).tobytes())))
    return result


def _convert_batch(items: list[ImageItem]) -> list[_ImageResult]:
    return [_convert_image(i) for i in items]


def _pool_context() -> Any:
    """A forkserver where there is one, else spawn; never a plain fork.

    Forking the caller is unsafe: a parent that has run OpenCV's or TensorFlow's thread pools leaves the
    child their locks but not their threads, and the child hangs on its first parallel call. The
    forkserver is a fresh process that only imports this module; workers forked from it start in
    milliseconds, and it lives on for later calls.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return multiprocessing.get_context("spawn")


def _workers_can_start() -> bool:
    """Whether pool workers can re-import the caller's main script, as forkserver and spawn do.

    A script read from stdin cannot be re-imported; its conversion runs in-process instead of hanging.
    """
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is None or os.path.isfile(main_file)


def _results(items: list[ImageItem], pool: Any, workers: int) -> Iterator[_ImageResult]:
    """Results in input order, with a bounded number of batches in flight (bounded memory)."""
    if pool is None:
        yield from map(_convert_image, items)
        return
    batch = max(1, min(16, len(items) // (workers * 8)))
    pending: collections.deque = collections.deque()
    for start in range(0, len(items), batch):
        pending.append(pool.apply_async(_convert_batch, (items[start : start + batch],)))
        if len(pending) >= workers * 4:
            yield from pending.popleft().get()
    while pending:
        yield from pending.popleft().get()


# tf.train.Example encoded by hand (protobuf wire format), so workers need no TensorFlow.
def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _entry(key: bytes, feature: bytes) -> bytes:
    """One entry of the ``Features.feature`` map (field 1): key = 1, value = 2."""
    return _field(1, _field(1, key) + _field(2, feature))


def encode_features(image: bytes, label: bytes) -> bytes:
    """The image and label entries of an Example's feature map (Feature.bytes_list = 1, BytesList.value = 1)."""
    return _entry(b"image", _field(1, _field(1, image))) + _entry(b"label", _field(1, _field(1, label)))


def with_row(features: bytes, row: int) -> bytes:
    """A serialized ``tf.train.Example``: ``features`` plus the row entry (Feature.int64_list = 3, packed)."""
    return _field(1, features + _entry(b"row", _field(3, _field(1, _varint(row)))))  # Example.features = 1


def encode_example(image: bytes, label: bytes, row: int) -> bytes:
    """A serialized ``tf.train.Example`` with features image (bytes), label (bytes) and row (int64)."""
    return with_row(encode_features(image, label), row)


class _ShardWriter:
    """Writes records into ``shards/<split>-NNNNN.tfrecord``, a new shard every ``per_shard`` records."""

    def __init__(self, store: Path, split: str, per_shard: int):
        self._store, self._split, self._per_shard = store, split, per_shard
        self._writer: Any = None
        self.count = 0
        self.shards: list[str] = []

    def write(self, record: bytes) -> None:
        if self.count % self._per_shard == 0:
            self.close()
            name = f"shards/{self._split}-{len(self.shards):05d}.tfrecord"
            self._writer = TFRecordWriter(self._store / name)
            self.shards.append(name)
        self._writer.write(record)
        self.count += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def cpu_count() -> int:
    """The cores this process may use (fewer than the machine's under a CPU affinity mask)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def fingerprint(dataset: YoloDataset, options: dict[str, Any]) -> str:
    """A hash of the options, the class names and every image and label file's path, size and mtime."""
    h = hashlib.sha256(json.dumps([FORMAT, VERSION, options, dataset.names], sort_keys=True).encode())
    for split, items in dataset.splits.items():
        for item in items:
            for path in (item.image, item.label):
                try:
                    st = os.stat(path)
                    h.update(f"{split}\0{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
                except OSError:
                    h.update(f"{split}\0{path}\0-\n".encode())
    for p in dataset.problems:
        h.update(f"{p}\n".encode())
    return h.hexdigest()


def _is_complete(store: Path, fp: str) -> bool:
    try:
        info = json.loads((store / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("format") == FORMAT and info.get("fingerprint") == fp


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
    with exclusive(out, what="conversion"):
        return _build(out, dataset, options, fp, strict, workers, progress)


def _build(
    out: Path,
    dataset: YoloDataset,
    options: dict[str, Any],
    fp: str,
    strict: bool,
    workers: int | None,
    progress: bool,
) -> Path:
    """Reuses the store at ``out`` if it is complete for ``fp``, else converts into it (lock held)."""
    if _is_complete(out, fp):
        # A store converted without --strict may hold problems that --strict must still refuse.
        recorded = read_problems(out) if strict and (out / "problems.csv").is_file() else []
        if recorded:
            raise UserError(f"{recorded[0]} (--strict; recorded when {out} was converted)")
        print(f"Reusing the store {out} (dataset and options unchanged)", file=sys.stderr)
        return out
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "dataset.json").exists())):
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
    worker_options = {**options, "num_classes": num_classes}
    total = sum(len(items) for items in dataset.splits.values())
    workers = min(workers or cpu_count(), total)
    pool = None
    if workers > 1 and _workers_can_start():
        pool = _pool_context().Pool(workers, initializer=_init_worker, initargs=(worker_options,))
    else:
        _init_worker(worker_options, pooled=False)
    problems = list(dataset.problems)
    splits: dict[str, Any] = {}
    skipped_small, row = 0, 0
    try:
        with open(tmp / "index.csv", "w", newline="", encoding="utf-8") as f:
            index = csv.writer(f, lineterminator="\n")
            index.writerow(["split", "image", "box", "x1", "y1", "x2", "y2", "label_ids"])
            for split, items in dataset.splits.items():
                writer = _ShardWriter(tmp, split, CROPS_PER_SHARD)
                bar = tqdm(total=len(items), desc=f"prepare {split}", unit="img", disable=not progress)
                try:
                    for item, result in zip(items, _results(items, pool, workers), strict=True):
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
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    # Splits that share images (a val that is the train) find the same problems: each is reported once.
    problems = list(dict.fromkeys(problems))
    _write_problems(tmp / "problems.csv", problems)
    info = {
        "format": FORMAT,
        "version": VERSION,
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
    }
    # Written last: its presence marks the store complete.
    (tmp / "dataset.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return {"splits": splits, "problems": problems, "skipped_small": skipped_small}


def _write_problems(path: Path, problems: list[Problem]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["kind", "file", "line", "value", "message"])
        for p in problems:
            w.writerow([p.kind, p.file, p.line or "", p.value, p.message])


def read_problems(store: str | os.PathLike) -> list[Problem]:
    """The problems a conversion recorded in ``store/problems.csv``."""
    with open(Path(store) / "problems.csv", newline="", encoding="utf-8") as f:
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
    print(f"All problems are listed in {out / 'problems.csv'}", file=sys.stderr)
