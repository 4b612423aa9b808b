"""Nothing lost, nothing mixed: a damaged or stale store is never reused or trained on, and a killed
``prepare`` leaves nothing behind and prints no traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import start_python
from yolol_tf.data.info import read_info
from yolol_tf.data.integrity import read_error
from yolol_tf.data.records import encode_example, example_size, shard_bytes
from yolol_tf.data.source import open_data
from yolol_tf.data.store import prepare
from yolol_tf.data.tfrecord import TFRecordWriter
from yolol_tf.errors import UserError

SHARD = "shards/train-00000.tfrecord"


def test_a_shard_size_follows_from_crop_size_classes_and_rows(tmp_path: Path) -> None:
    # Rows across the varint boundaries (1 byte below 128, 2 below 16384, ...) change a record's length.
    for row in (0, 127, 128, 16383, 16384, 2**21, 2**40):
        for image, label in ((0, 0), (8 * 8 * 3, 4), (64 * 64 * 3, 63), (200_000, 300)):
            assert example_size(image, label, row) == len(encode_example(bytes(image), bytes(label), row))
    with TFRecordWriter(tmp_path / "a.tfrecord") as writer:
        for row in range(120, 140):
            writer.write(encode_example(bytes(6 * 6 * 3), bytes(5), row))
    assert shard_bytes(6, 5, 120, 20) == writer.size == (tmp_path / "a.tfrecord").stat().st_size


# Ways a store gets damaged, each with what the one-line message must say about it.
def _truncate(store: Path) -> str:
    shard = store / SHARD
    size = shard.stat().st_size
    os.truncate(shard, size - 100)  # a copy cut short, a full disk
    return f"{SHARD} is {size - 100} bytes, dataset.json says {size}"


def _delete_index(store: Path) -> str:
    (store / "index.csv").unlink()
    return "index.csv is missing"


def _flip_a_byte(store: Path) -> str:
    """Flips a pixel byte of the shard's second record (records are all of one length at rows < 128)."""
    shard = store / SHARD
    data = bytearray(shard.read_bytes())
    length = len(data) // json.loads((store / "dataset.json").read_text())["files"][SHARD]["records"]
    data[length + 12 + length // 2] ^= 0x01  # same size, other bytes: only a checksum sees it
    shard.write_bytes(bytes(data))
    return f"{SHARD} fails its checksum"


def _edit_json(store: Path, **changes) -> None:
    meta = json.loads((store / "dataset.json").read_text())
    meta.update(changes)
    (store / "dataset.json").write_text(json.dumps(meta))


def _halve_size(store: Path) -> str:
    size = json.loads((store / "dataset.json").read_text())["size"]
    _edit_json(store, size=size // 2)
    return "dataset.json says size is"


@pytest.mark.parametrize("damage", [_truncate, _delete_index, _flip_a_byte, _halve_size])
def test_prepare_rebuilds_a_damaged_store_saying_why_in_one_line(
    tmp_path: Path, capsys, damage, make_yolo_dataset
) -> None:
    data = make_yolo_dataset(tmp_path / "ds")
    store = prepare(data, tmp_path / "store", workers=1, progress=False)
    whole = {p.relative_to(store): p.read_bytes() for p in store.rglob("*") if p.is_file()}
    capsys.readouterr()
    why = damage(store)
    assert prepare(data, tmp_path / "store", workers=1, progress=False) == store
    out, err = capsys.readouterr()
    rebuilding = [line for line in err.splitlines() if line.startswith("Rebuilding")]
    assert rebuilding and rebuilding[0].startswith(f"Rebuilding the store {store}: ") and why in rebuilding[0]
    assert "Reusing" not in err and out == ""  # messages go to stderr only
    assert {p.relative_to(store): p.read_bytes() for p in store.rglob("*") if p.is_file()} == whole


def test_force_rebuilds_a_whole_store(tmp_path: Path, capsys, make_yolo_dataset) -> None:
    data = make_yolo_dataset(tmp_path / "ds")
    store = prepare(data, tmp_path / "store", workers=1, progress=False)
    before = (store / "dataset.json").stat().st_mtime_ns
    capsys.readouterr()
    prepare(data, tmp_path / "store", force=True, workers=1, progress=False)
    assert f"Rebuilding the store {store}: --force" in capsys.readouterr().err
    assert (store / "dataset.json").stat().st_mtime_ns != before
    prepare(data, tmp_path / "store", workers=1, progress=False)
    assert "Reusing" in capsys.readouterr().err


def test_a_label_edit_that_keeps_size_and_mtime_rebuilds_the_store(
    tmp_path: Path, capsys, make_yolo_dataset
) -> None:
    data = make_yolo_dataset(tmp_path / "ds")
    store = prepare(data, tmp_path / "store", workers=1, progress=False)
    label = tmp_path / "ds/labels/val/d.txt"
    st = label.stat()
    text = label.read_text()
    assert text.startswith("0 ")
    label.write_text("2" + text[1:])  # class 0 -> 2: same size
    os.utime(label, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the mtime put back, as a checkout may
    assert (label.stat().st_size, label.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    capsys.readouterr()
    prepare(data, tmp_path / "store", workers=1, progress=False)
    assert "the dataset or the options changed" in capsys.readouterr().err
    index = (store / "index.csv").read_text().splitlines()
    assert [line.rsplit(",", 1)[1] for line in index if line.startswith("val,")] == ["2"]


@pytest.fixture
def small_store(tmp_path: Path, make_store) -> Path:
    """A hand-written store: train 20 crops in shards of 8, val 10; 8 px, 4 classes."""
    return make_store(
        tmp_path / "store",
        pattern="random",
        counts={"train": 20, "val": 10},
        size=8,
        num_classes=4,
        records_per_shard=8,
    )


def _refusal(store: Path, call) -> str:
    with pytest.raises(UserError) as e:
        call(store)
    message = e.value.message
    assert "\n" not in message and str(store) in message and "--force" in message
    assert message.startswith(f"The store {store} is damaged: ") and "yolol-tf prepare" in message
    return message


@pytest.mark.parametrize(
    "call",
    [read_info, open_data, lambda s: __import__("yolol_tf.data.pipeline").data.pipeline.load(s, "train")],
    ids=["read_info", "open_data", "load"],
)
@pytest.mark.parametrize("damage", [_truncate, _delete_index, _halve_size])
def test_a_damaged_store_is_refused_before_training_in_one_line(small_store: Path, call, damage) -> None:
    why = damage(small_store)
    message = _refusal(small_store, call)
    if damage is _halve_size:  # the shards hold 8 px crops: no shape error later, a clear one now
        assert f"{SHARD} is " in message and "4x4 px crops with 4 classes take" in message
    else:
        assert why in message


def test_dataset_json_edited_to_other_classes_is_refused(small_store: Path) -> None:
    names = ["class0", "class1", "class2", "class3", "class4"]
    _edit_json(small_store, names=names, num_classes=5)
    assert "8x8 px crops with 5 classes take" in _refusal(small_store, read_info)
    _edit_json(
        small_store, names=names[:4], num_classes=4, splits={"train": {"crops": 99, "shards": [SHARD]}}
    )
    assert "split 'train' 99 crops, but its shards hold 8" in _refusal(small_store, read_info)


def test_a_record_damaged_in_place_is_named_by_store_shard_and_offset(small_store: Path) -> None:
    import tensorflow as tf

    from yolol_tf.data.pipeline import load

    _flip_a_byte(small_store)
    ds = load(small_store, "train", 4)  # same sizes: only reading finds it
    with pytest.raises(tf.errors.DataLossError) as e:
        list(ds)
    error = read_error(e.value)
    assert error is not None and "\n" not in error.message
    length = (small_store / SHARD).stat().st_size // 8
    assert error.message.startswith(
        f"The store {small_store} is damaged: {SHARD}: record data fails its checksum at byte offset {length}."
    )
    assert "--force" in error.message
    assert read_error(ValueError("not ours")) is None


def test_training_on_a_store_damaged_in_place_ends_in_one_line(tmp_path: Path, capsys, make_store) -> None:
    from yolol_tf.cli import main

    # 16 px: the smallest size a model takes.
    store = make_store(
        tmp_path / "s16",
        pattern="random",
        counts={"train": 20, "val": 10},
        size=16,
        num_classes=4,
        records_per_shard=8,
    )
    _flip_a_byte(store)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "model_options: {width: 4, depths: [1]}\nepochs: 1\nbatch_size: 8\naugment: 0\n"
        "mixed_precision: 'off'\njit: false\n"
    )
    code = main(
        ["train", "cnn", "--data", str(store), "--config", str(config), "--out", str(tmp_path / "run")]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"error: The store {store} is damaged: {SHARD}: record data fails its checksum" in err
    assert "Traceback" not in err and "DataLossError" not in err


def test_version_1_stores_are_still_read_and_checked(small_store: Path) -> None:
    meta = json.loads((small_store / "dataset.json").read_text())
    del meta["files"]
    meta["version"] = 1
    (small_store / "dataset.json").write_text(json.dumps(meta))
    assert read_info(small_store).counts == {"train": 20, "val": 10}
    os.truncate(small_store / SHARD, (small_store / SHARD).stat().st_size - 1)
    assert "the shards of split 'train' are" in _refusal(small_store, read_info)


def test_prepare_converts_a_version_1_store_again(tmp_path: Path, capsys, make_yolo_dataset) -> None:
    data = make_yolo_dataset(tmp_path / "ds")
    store = prepare(data, tmp_path / "store", workers=1, progress=False)
    _edit_json(store, version=1)
    capsys.readouterr()
    prepare(data, tmp_path / "store", workers=1, progress=False)
    assert "older yolol-tf (store version 1)" in capsys.readouterr().err
    assert json.loads((store / "dataset.json").read_text())["version"] == 3


@pytest.mark.parametrize(
    "how",
    ["ctrl-c", "sigterm", "sigterm-to-all"],
)
@pytest.mark.timeout(120)
def test_a_killed_prepare_stops_quietly_and_leaves_nothing(
    tmp_path: Path, how: str, make_yolo_dataset
) -> None:
    data = make_yolo_dataset(tmp_path / "ds")
    args = ["prepare", str(data), "--out", str(tmp_path / "store"), "--workers", "2"]
    # Paused at its first crop, saying so on stderr: the test signals it at a known point, not after a guess.
    # A session of its own: Ctrl-C at a terminal signals the whole process group, workers included.
    proc = start_python(
        "-m", "tests.support.paused_prepare", *args, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        seen = b""
        while b"PAUSED" not in seen:
            chunk = proc.stderr.read1(4096)
            assert chunk, seen.decode()
            seen += chunk
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        elif how == "sigterm":  # `kill PID`
            os.kill(proc.pid, signal.SIGTERM)
        else:  # a service manager stopping every process of the job
            os.killpg(proc.pid, signal.SIGTERM)
        err = (seen + proc.communicate(timeout=60)[1]).decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "BrokenPipeError" not in err and "leaked" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no store, no partial folder, no lock


@pytest.mark.timeout(60)
def test_a_worker_that_dies_is_one_error_not_a_hang(tmp_path: Path, make_yolo_dataset) -> None:
    from yolol_tf.data.workers import Workers
    from yolol_tf.data.yolo import find_dataset

    items = find_dataset(make_yolo_dataset(tmp_path / "ds")).splits["train"] * 20
    options = {
        "size": 16,
        "context": 0.0,
        "min_visible": 0.5,
        "min_box": 2.0,
        "mode": "crop",
        "num_classes": 3,
    }
    workers = Workers(2, options)
    try:
        results = workers.results(items)
        next(results)
        workers._procs[1].kill()  # as the OOM killer would
        with pytest.raises(UserError, match=r"A conversion worker died \(exit code -9"):
            list(results)
    finally:
        workers.close(finished=False)
