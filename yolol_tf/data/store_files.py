"""The files of a crop store as they are written: TFRecord shards and text files that keep their size and CRC32C,
so dataset.json can record what was written without reading it back (see :mod:`yolol_tf.data.integrity`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import crc32c

from yolol_tf.data.tfrecord import TFRecordWriter

CROPS_PER_SHARD = 2048  # ~25 MB shards at size 64: large sequential reads, enough shards to interleave


class ShardWriter:
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


class TextFile:
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

    def __enter__(self) -> TextFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()
