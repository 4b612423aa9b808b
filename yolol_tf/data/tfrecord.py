"""TFRecord files written and checked without TensorFlow, so ``yolol-tf prepare`` never loads it.

A TFRecord file is a sequence of records, each framed as

    uint64 length | uint32 masked CRC32C of the 8 length bytes | data | uint32 masked CRC32C of data

(all little-endian), where masked(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8, mod 2**32. The mask is
TensorFlow's (``tsl/lib/hash/crc32c.h``): a CRC computed over bytes that themselves embed CRCs is weak, so
the stored value is rotated and offset. Files written here are byte-for-byte those ``tf.io.TFRecordWriter``
writes without compression (tested), and ``read_records`` reads either.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import BinaryIO

import crc32c

from yolol_tf.errors import UserError

_MASK_DELTA = 0xA282EAD8
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_HEADER = struct.Struct("<QI")  # length, masked CRC of the length
_BUFFER = 1 << 20  # bytes buffered before a write to disk: a crop record is ~12 KB at size 64


def masked_crc(data: bytes) -> int:
    """The masked CRC32C that TFRecord framing stores for ``data``."""
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def framed_size(length: int) -> int:
    """The bytes a record of ``length`` bytes takes in a TFRecord file, framing included."""
    return _HEADER.size + length + _CRC.size


def _frame(record: bytes) -> tuple[bytes, bytes]:
    """The bytes written before and after ``record``: its length and checksums."""
    length = _LENGTH.pack(len(record))
    return _HEADER.pack(len(record), masked_crc(length)), _CRC.pack(masked_crc(record))


class TFRecordWriter:
    """Appends records to a new TFRecord file, one at a time (memory stays at one buffer, not one file).

    Use it as a context manager, or call ``close``; the file is complete only once closed. It keeps the
    file's length and CRC32C as it writes, so a store can record them without reading its shards again.

    Args:
        path: the file to create (an existing one is truncated).

    Attributes:
        count: records written.
        size: bytes written.
        checksum: the CRC32C of the bytes written (not masked), as :func:`file_crc32c` computes it.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._file: BinaryIO | None = open(self.path, "wb", buffering=_BUFFER)
        self.count = 0
        self.size = 0
        self.checksum = 0

    def write(self, record: bytes) -> None:
        """Appends one record."""
        if self._file is None:
            raise ValueError(f"{self.path}: write after close")
        header, footer = _frame(record)
        for part in (header, record, footer):
            self._file.write(part)
            self.checksum = crc32c.crc32c(part, self.checksum)
        self.size += len(header) + len(record) + len(footer)
        self.count += 1

    def close(self) -> None:
        """Flushes and closes the file; closing twice does nothing."""
        if self._file is not None:
            file, self._file = self._file, None
            file.close()

    def __enter__(self) -> TFRecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def file_crc32c(path: str | os.PathLike) -> int:
    """The CRC32C of a whole file (hardware-accelerated: reading it costs more than the sum).

    Raises:
        OSError: when the file cannot be read.
    """
    value = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(4 * _BUFFER):
            value = crc32c.crc32c(chunk, value)
    return value


class CorruptRecordError(UserError):
    """A TFRecord file that is truncated or fails a checksum; the message names the file and byte offset.

    Attributes:
        path: the file.
        offset: byte offset of the start of the bad record.
        problem: what is wrong with it, e.g. "record data fails its checksum".
    """

    def __init__(self, path: str, offset: int, problem: str):
        super().__init__(f"{path}: {problem} at byte offset {offset}")
        self.path = path
        self.offset = offset
        self.problem = problem


def read_records(path: str | os.PathLike) -> Iterator[bytes]:
    """Yields the records of a TFRecord file in order, checking both checksums of each.

    The file is read one record at a time.

    Args:
        path: an uncompressed TFRecord file.

    Raises:
        CorruptRecordError: on a truncated record or a checksum mismatch, naming the file and the byte
            offset where the bad record starts.
        UserError: when the file cannot be opened.
    """
    path = os.fspath(path)
    try:
        f = open(path, "rb", buffering=_BUFFER)
    except OSError as e:
        raise UserError(f"{path}: cannot read record file ({e.strerror or e})") from None
    with f:
        offset = 0
        while True:
            header = f.read(_HEADER.size)
            if not header:
                return
            if len(header) < _HEADER.size:
                raise CorruptRecordError(path, offset, f"truncated record header ({len(header)} of 12 bytes)")
            length, length_crc = _HEADER.unpack(header)
            # Checked before reading on: a corrupt length could ask for any number of bytes.
            if masked_crc(header[:8]) != length_crc:
                raise CorruptRecordError(path, offset, "record length fails its checksum")
            body = f.read(length + _CRC.size)
            if len(body) < length + _CRC.size:
                missing = f"{len(body)} of {length + _CRC.size} bytes after the header"
                raise CorruptRecordError(path, offset, f"truncated record ({missing})")
            record = body[:length]
            if masked_crc(record) != _CRC.unpack_from(body, length)[0]:
                raise CorruptRecordError(path, offset, "record data fails its checksum")
            yield record
            offset += _HEADER.size + length + _CRC.size


def verify(path: str | os.PathLike) -> int:
    """Checks every record of a TFRecord file and returns how many it holds.

    Raises:
        CorruptRecordError: naming the file and the byte offset of the first bad record.
    """
    return sum(1 for _ in read_records(path))
