"""What checking a store costs, against reading it, in the same run.

    python benchmarks/bench_store_verify.py [--mb 300] [--size 64] [--no-tf]

Writes a store of about ``--mb`` MB of random crops (shards of 2048, as ``prepare`` makes them) in a
temporary folder, then times, with the files in the page cache ("warm") and dropped from it ("cold",
``posix_fadvise(DONTNEED)``, Linux):
  * read: every byte of every file read in 4 MB chunks, nothing computed (the baseline);
  * crc32c: ``integrity.checksum_damage``, what ``prepare`` runs before reusing a store;
  * sha256: the same read with SHA-256 instead (the alternative that was not chosen);
  * sizes: ``integrity.damage``, what ``load``/``read_info``/``open_data`` run (a ``stat`` a file);
  * epoch: one pass of ``yolol_tf.data.load`` over the split (what training reads anyway; skip with --no-tf);
and prints each as MB/s and as a ratio to the plain read.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yolol_tf.data import integrity  # noqa: E402
from yolol_tf.data.records import encode_example  # noqa: E402
from yolol_tf.data.tfrecord import TFRecordWriter, file_crc32c  # noqa: E402

PER_SHARD = 2048


def make_store(root: Path, mb: int, size: int, num_classes: int = 10) -> dict:
    """A version-2 store of random crops, written as ``prepare`` writes one; returns its dataset.json."""
    image = size * size * 3
    crops = mb * 2**20 // (image + num_classes + 40)
    pixels = os.urandom(image * 64)  # a pool of random images, so writing is not spent in urandom
    (root / "shards").mkdir(parents=True)
    files: dict = {}
    shards = []
    for first in range(0, crops, PER_SHARD):
        name = f"shards/train-{len(shards):05d}.tfrecord"
        with TFRecordWriter(root / name) as w:
            for row in range(first, min(crops, first + PER_SHARD)):
                k = row % 64
                w.write(encode_example(pixels[k * image : (k + 1) * image], bytes(num_classes), row))
        files[name] = {"bytes": w.size, "records": w.count, "crc32c": f"{w.checksum:08x}"}
        shards.append(name)
    (root / "index.csv").write_text("split,image,box,x1,y1,x2,y2,label_ids\n")
    index = root / "index.csv"
    files["index.csv"] = {"bytes": index.stat().st_size, "crc32c": f"{file_crc32c(index):08x}"}
    meta = {
        "format": "yolol-tf-store", "version": 2, "names": [f"c{i}" for i in range(num_classes)],
        "num_classes": num_classes, "size": size, "mode": "crop", "options": {}, "source": "bench",
        "splits": {"train": {"images": crops, "crops": crops, "shards": shards}}, "problems": 0,
        "skipped_small": 0, "fingerprint": "bench", "files": files,
    }  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(meta))
    return meta


def drop_cache(root: Path) -> bool:
    """Drops the store's files from the page cache; False where the OS cannot."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for path in root.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    return True


def read_all(root: Path, meta: dict, hasher=None) -> None:
    for name in meta["files"]:
        h = hasher() if hasher else None
        with open(root / name, "rb", buffering=0) as f:
            while chunk := f.read(4 << 20):
                if h:
                    h.update(chunk)


def epoch(root: Path) -> None:
    from yolol_tf.data import load

    for _ in load(root, "train", 256):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=300, help="store size in MB")
    parser.add_argument("--size", type=int, default=64, help="crop side")
    parser.add_argument("--no-tf", action="store_true", help="skip the tf.data epoch")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        root = Path(tmp) / "store"
        meta = make_store(root, args.mb, args.size)
        total = sum(e["bytes"] for e in meta["files"].values()) / 2**20
        print(
            f"store: {total:.0f} MB in {len(meta['splits']['train']['shards'])} shards of {PER_SHARD} crops"
        )
        cases = {
            "read": lambda: read_all(root, meta),
            "crc32c": lambda: integrity.checksum_damage(root, meta),
            "sha256": lambda: read_all(root, meta, hashlib.sha256),
            "sizes": lambda: integrity.damage(root, meta),
        }
        if not args.no_tf:
            cases["epoch"] = lambda: epoch(root)
        assert integrity.damage(root, meta) is None and integrity.checksum_damage(root, meta) is None
        for cache in ("warm", "cold"):
            times = {}
            for name, run in cases.items():
                if cache == "cold" and not drop_cache(root):
                    print("cold: posix_fadvise is not available here")
                    return
                if cache == "warm":
                    run()  # fill the page cache
                start = time.perf_counter()
                run()
                times[name] = time.perf_counter() - start
            for name, seconds in times.items():
                rate = f"{total / seconds:9.0f} MB/s" if name != "sizes" else f"{seconds * 1e3:7.2f} ms    "
                print(f"{cache:4} {name:7} {seconds:8.3f} s  {rate}  x{seconds / times['read']:.2f} of read")


if __name__ == "__main__":
    main()
