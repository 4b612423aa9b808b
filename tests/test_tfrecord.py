"""TFRecord files written without TensorFlow: what TensorFlow reads, byte for byte; damage found and placed."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import crc32c
import numpy as np
import pytest

from yolol_tf.data.store import encode_example, prepare
from yolol_tf.data.tfrecord import CorruptRecordError, TFRecordWriter, file_crc32c, read_records, verify
from yolol_tf.errors import UserError

# Lengths around the varint and buffer boundaries, an empty record, one larger than the write buffer.
RECORDS = [b"", b"x", bytes(range(256)) * 3, os.urandom(127), os.urandom(128), os.urandom((1 << 20) + 5)]


def _write(path: Path, records: list[bytes]) -> Path:
    with TFRecordWriter(path) as writer:
        for r in records:
            writer.write(r)
    assert writer.count == len(records)
    # The size and checksum a store records are taken while writing, and are those of the file.
    data = path.read_bytes()
    assert writer.size == len(data) and writer.checksum == crc32c.crc32c(data) == file_crc32c(path)
    return path


def test_tensorflow_reads_back_every_record_unchanged(tmp_path):
    tf = pytest.importorskip("tensorflow")
    path = _write(tmp_path / "a.tfrecord", RECORDS)
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == RECORDS


def test_files_are_byte_for_byte_those_tensorflow_writes(tmp_path):
    tf = pytest.importorskip("tensorflow")
    records = [*RECORDS, encode_example(os.urandom(64 * 64 * 3), b"\x00\x01\x01", 12345)]
    ours = _write(tmp_path / "ours.tfrecord", records)
    with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as writer:
        for r in records:
            writer.write(r)
    assert ours.read_bytes() == (tmp_path / "tf.tfrecord").read_bytes()
    assert list(read_records(tmp_path / "tf.tfrecord")) == records


def test_a_prepared_store_reads_through_the_training_pipeline_and_verifies(tmp_path, make_yolo_dataset):
    from yolol_tf.data import load

    store = prepare(make_yolo_dataset(tmp_path / "ds"), tmp_path / "store", workers=1, progress=False)
    info = json.loads((store / "dataset.json").read_text())
    images, labels = next(iter(load(store, "train", batch_size=64)))
    assert images.shape == (6, 64, 64, 3) and labels.shape == (6, 3)
    for split, entry in info["splits"].items():
        assert sum(verify(store / shard) for shard in entry["shards"]) == entry["crops"], split
    # The first crop is box 0 of train/a.jpg, class 0 (apple), alone in its window.
    assert labels.numpy()[0].tolist() == [1.0, 0.0, 0.0] and images.numpy().dtype == np.uint8


def _offsets(records: list[bytes]) -> list[int]:
    """Byte offset of each record's header."""
    return np.cumsum([0] + [12 + len(r) + 4 for r in records[:-1]]).tolist()


@pytest.mark.parametrize(
    "cut_at, record",
    [
        (3, 0),  # inside the first header
        (12 + 1, 0),  # inside the first record's data (b"xy")
        (12 + 2 + 4 + 12 + 5, 1),  # inside the second record's data
        (12 + 2 + 4 + 12 + 7 + 2, 1),  # inside the second record's data checksum
    ],
)
def test_truncation_is_reported_with_the_file_and_offset_of_the_cut_record(tmp_path, cut_at, record):
    records = [b"xy", b"abcdefg", b"last"]
    path = _write(tmp_path / "t.tfrecord", records)
    path.write_bytes(path.read_bytes()[:cut_at])
    with pytest.raises(CorruptRecordError, match="truncated") as e:
        verify(path)
    offset = _offsets(records)[record]
    assert (e.value.path, e.value.offset) == (str(path), offset)
    assert str(path) in e.value.message and f"byte offset {offset}" in e.value.message
    assert isinstance(e.value, UserError)  # the CLI prints it as one line, not a traceback


@pytest.mark.parametrize(
    "where, message",
    [
        (0, "length fails its checksum"),  # the length
        (9, "length fails its checksum"),  # the length's checksum
        (12 + 3, "data fails its checksum"),  # the data
        (12 + 10, "data fails its checksum"),  # the data's checksum
    ],
)
def test_a_flipped_byte_is_reported_with_the_file_and_offset_of_its_record(tmp_path, where, message):
    records = [b"first record", b"0123456789", b"third"]
    path = _write(tmp_path / "f.tfrecord", records)
    data = bytearray(path.read_bytes())
    second = _offsets(records)[1]
    data[second + where] ^= 0x10
    path.write_bytes(bytes(data))
    good = read_records(path)
    assert next(good) == records[0]  # records before the damage still read
    with pytest.raises(CorruptRecordError, match=message) as e:
        next(good)
    assert e.value.offset == second and f"{path}: record" in e.value.message


def test_an_empty_file_has_no_records_and_a_missing_one_is_a_user_error(tmp_path):
    assert verify(_write(tmp_path / "empty.tfrecord", [])) == 0
    with pytest.raises(UserError, match="missing.tfrecord"):
        verify(tmp_path / "missing.tfrecord")


def test_prepare_from_the_command_line_never_imports_tensorflow(tmp_path, make_yolo_dataset, run_python):
    data = make_yolo_dataset(tmp_path / "ds")
    script = textwrap.dedent(f"""
        import sys
        from yolol_tf.cli import main
        status = main(["prepare", {str(data)!r}, "--out", {str(tmp_path / "store")!r}, "--workers", "2"])
        heavy = sorted(m for m in ("tensorflow", "keras", "tf_keras") if m in sys.modules)
        print("status", status, "heavy", heavy)
    """)
    out = run_python("-c", script, timeout=120)
    assert "status 0 heavy []" in out.stdout, out.stdout + out.stderr
    assert (tmp_path / "store" / "dataset.json").is_file()
