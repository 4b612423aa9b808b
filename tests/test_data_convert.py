"""Converting YOLO datasets into the crop store: the conversion rule, the store, reuse, atomicity, bad input."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import crc32c
import numpy as np
import pytest
import yaml

from tests.support.data import LAYOUTS, YOLO_NAMES
from yolol_tf.data import store as store_module
from yolol_tf.data.crops import cut, plan_crops, plan_image
from yolol_tf.data.images import read_image
from yolol_tf.data.store import encode_example, prepare, read_problems
from yolol_tf.data.tfrecord import verify
from yolol_tf.data.yolo import Box
from yolol_tf.errors import UserError

# A 100 x 100 image; boxes in pixels (normalised below). Hand-computed visibility inside each box:
#   A (cls 0) 10..50 x 10..50;  B (cls 1) 30..70 x 30..70: 25% of B is inside A and 25% of A inside B;
#   C (cls 2) 12..32 x 12..32: all inside A, 4 px^2 of B (0.25%);  D (cls 1) 40..60 x 10..30: exactly half in A.
PIXEL_BOXES = [(0, 10, 10, 50, 50), (1, 30, 30, 70, 70), (2, 12, 12, 32, 32), (1, 40, 10, 60, 30)]
BOXES = [
    Box(i, c, x1 / 100, y1 / 100, x2 / 100, y2 / 100) for i, (c, x1, y1, x2, y2) in enumerate(PIXEL_BOXES)
]


def _labels(samples) -> list[tuple[int, ...]]:
    return [s.label_ids for s in samples]


def test_overlapping_boxes_get_the_hand_computed_label_sets():
    samples, skipped = plan_crops(BOXES, 100, 100)
    assert skipped == 0
    assert [s.box for s in samples] == [0, 1, 2, 3]
    assert [s.window for s in samples] == [
        (10, 10, 50, 50),
        (30, 30, 70, 70),
        (12, 12, 32, 32),
        (40, 10, 60, 30),
    ]
    # A shows all of C and exactly half of D; B, C and D show at most 25% of any other box.
    assert _labels(samples) == [(0, 1, 2), (1,), (2,), (1,)]


def test_min_visible_and_context_change_the_label_sets():
    strict, _ = plan_crops(BOXES, 100, 100, min_visible=0.6)
    assert _labels(strict) == [(0, 2), (1,), (2,), (1,)]  # D (50% in A) no longer counts
    grown, _ = plan_crops(BOXES, 100, 100, context=0.5)
    # A grown by 20 px a side (clipped at 0) and B by 20 px hold all the other boxes; C grown by 10 px
    # holds 32x32 of A's 40x40 (64%); D grown by 10 px holds 37.5% of A, 25% of B, 10% of C.
    assert [s.window for s in grown] == [(0, 0, 70, 70), (10, 10, 90, 90), (2, 2, 42, 42), (30, 0, 70, 40)]
    assert _labels(grown) == [(0, 1, 2), (0, 1, 2), (0, 2), (1,)]


def test_boxes_below_min_box_are_skipped_and_counted():
    tiny = [Box(0, 0, 0.1, 0.1, 0.115, 0.5), Box(1, 1, 0.2, 0.2, 0.6, 0.6)]  # 1.5 px wide at 100 px
    samples, skipped = plan_crops(tiny, 100, 100, min_box=2)
    assert skipped == 1 and [s.box for s in samples] == [1]
    assert plan_crops(tiny, 100, 100, min_box=1)[1] == 0


def test_image_mode_labels_every_class_in_the_image():
    sample = plan_image(BOXES, 100, 80)
    assert sample.box is None and sample.window == (0, 0, 100, 80) and sample.label_ids == (0, 1, 2)
    assert plan_image([], 100, 80).label_ids == ()


def test_encoded_examples_parse_as_tf_train_examples():
    tf = pytest.importorskip("tensorflow")
    record = encode_example(bytes(range(256)) * 3, b"\x00\x01", 300)
    example = tf.train.Example.FromString(record)
    feature = example.features.feature
    assert feature["image"].bytes_list.value[0] == bytes(range(256)) * 3
    assert feature["label"].bytes_list.value[0] == b"\x00\x01"
    assert list(feature["row"].int64_list.value) == [300]


def _read_index(store: Path) -> list[dict]:
    with open(store / "index.csv", newline="") as f:
        return list(csv.DictReader(f))


def _read_records(store: Path, split: str) -> list[tuple[np.ndarray, np.ndarray, int]]:
    tf = pytest.importorskip("tensorflow")
    info = json.loads((store / "dataset.json").read_text())
    out = []
    for shard in info["splits"][split]["shards"]:
        for record in tf.data.TFRecordDataset(str(store / shard)):
            f = tf.train.Example.FromString(record.numpy()).features.feature
            image = np.frombuffer(f["image"].bytes_list.value[0], np.uint8).reshape(
                info["size"], info["size"], 3
            )
            label = np.frombuffer(f["label"].bytes_list.value[0], np.uint8)
            out.append((image, label, f["row"].int64_list.value[0]))
    return out


EXPECTED_LABELS = {  # per split: label_ids of each crop in order (see IMAGES in tests/support/data.py)
    "train": ["0", "1", "2", "1;2", "0", "1;2"],
    "val": ["0"],
    "test": ["2", "1"],
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_converts_to_the_same_crops(tmp_path, layout, make_yolo_dataset):
    store = prepare(make_yolo_dataset(tmp_path / "ds", layout), tmp_path / "store", workers=1, progress=False)
    rows = _read_index(store)
    labels = [r["label_ids"] for r in rows]
    if layout == "folder":  # one split, images in name order test_f, train_a.., val_d
        assert labels == EXPECTED_LABELS["test"] + EXPECTED_LABELS["train"] + EXPECTED_LABELS["val"]
    else:
        assert {
            s: [r["label_ids"] for r in rows if r["split"] == s] for s in EXPECTED_LABELS
        } == EXPECTED_LABELS
    info = json.loads((store / "dataset.json").read_text())
    assert info["names"] == YOLO_NAMES and info["num_classes"] == 3 and info["problems"] == 0


def test_store_holds_the_letterboxed_crops_labels_and_rows(tmp_path, make_yolo_dataset):
    data = make_yolo_dataset(tmp_path / "ds", "ultralytics")
    store = prepare(data, tmp_path / "store", size=32, workers=1, progress=False)
    info = json.loads((store / "dataset.json").read_text())
    assert info["format"] == "yolol-tf-store" and info["version"] == 3 and info["mode"] == "crop"
    assert info["splits"]["train"] == {"images": 3, "crops": 6, "shards": ["shards/train-00000.tfrecord"]}
    # Every file's size and CRC32C (and each shard's record count), as taken while writing, equal the files'.
    assert sorted(info["files"]) == sorted(
        ["index.csv", "problems.csv", *(f"shards/{s}-00000.tfrecord" for s in ("train", "val", "test"))]
    )
    for name, entry in info["files"].items():
        data = (store / name).read_bytes()
        assert entry["bytes"] == len(data) and entry["crc32c"] == f"{crc32c.crc32c(data):08x}", name
        if name.startswith("shards/"):
            assert entry["records"] == verify(store / name)
    assert info["options"] == {"size": 32, "context": 0.0, "min_visible": 0.5, "min_box": 2.0, "mode": "crop"}
    rows = _read_index(store)
    assert list(rows[0]) == ["split", "image", "box", "x1", "y1", "x2", "y2", "label_ids"]
    assert rows[0] == {"split": "train", "image": "images/train/a.jpg", "box": "0", "x1": "4", "y1": "4",
                       "x2": "28", "y2": "28", "label_ids": "0"}  # fmt: skip
    records = _read_records(store, "train") + _read_records(store, "val") + _read_records(store, "test")
    assert [r[2] for r in records] == list(range(len(rows)))
    for (image, label, _), r in zip(records, rows, strict=True):
        window = tuple(int(r[k]) for k in ("x1", "y1", "x2", "y2"))
        source = read_image(tmp_path / "ds" / r["image"])
        assert np.array_equal(image, cut(source, window, 32))
        assert [i for i in range(3) if label[i]] == [int(x) for x in r["label_ids"].split(";")]


def test_shards_hold_a_fixed_number_of_crops_and_rows_continue_across_them(
    tmp_path, monkeypatch, make_yolo_dataset
):
    monkeypatch.setattr(store_module, "CROPS_PER_SHARD", 4)
    store = prepare(
        make_yolo_dataset(tmp_path / "ds", "ultralytics"), tmp_path / "s", workers=2, progress=False
    )
    train = json.loads((store / "dataset.json").read_text())["splits"]["train"]
    assert train["shards"] == ["shards/train-00000.tfrecord", "shards/train-00001.tfrecord"]
    assert [r[2] for r in _read_records(store, "train")] == list(range(6))


def test_image_mode_gives_one_sample_per_image(tmp_path, make_yolo_dataset):
    store = prepare(
        make_yolo_dataset(tmp_path / "ds", "ultralytics"), tmp_path / "s", mode="image", workers=1
    )
    rows = _read_index(store)
    assert [(r["image"].split("/")[-1], r["box"], r["label_ids"]) for r in rows] == [
        ("a.jpg", "", "0;1"), ("b.jpg", "", "2"), ("c.jpg", "", "0;1;2"),
        ("d.jpg", "", "0"), ("e.jpg", "", ""), ("f.jpg", "", "1;2"),
    ]  # fmt: skip
    assert (rows[1]["x2"], rows[1]["y2"]) == ("48", "64")


def test_conversion_is_deterministic_whatever_the_number_of_workers(tmp_path, make_yolo_dataset):
    data = make_yolo_dataset(tmp_path / "ds", "ultralytics")
    one = prepare(data, tmp_path / "one", workers=1, progress=False)
    two = prepare(data, tmp_path / "two", workers=2, progress=False)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    for f in files:
        assert (one / f).read_bytes() == (two / f).read_bytes(), f


@pytest.mark.timeout(120)
def test_workers_start_cleanly_after_the_caller_used_opencv_threads(tmp_path, make_yolo_dataset):
    import cv2

    # A forked child inherits OpenCV's thread-pool locks but not its threads and would hang here.
    cv2.setNumThreads(2)
    cv2.resize(np.zeros((2000, 2000, 3), np.uint8), (1000, 1000))
    store = prepare(
        make_yolo_dataset(tmp_path / "ds", "ultralytics"), tmp_path / "s", workers=2, progress=False
    )
    assert len(_read_index(store)) == 9


def _mtimes(store: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in store.rglob("*")}


def test_unchanged_dataset_reuses_the_store_and_a_change_rebuilds_it(tmp_path, capsys, make_yolo_dataset):
    data = make_yolo_dataset(tmp_path / "ds", "ultralytics")
    store = prepare(data, tmp_path / "store", workers=1, progress=False)
    before = _mtimes(store)
    assert prepare(data, tmp_path / "store", workers=1, progress=False) == store
    assert _mtimes(store) == before
    assert "Reusing" in capsys.readouterr().err
    label = tmp_path / "ds/labels/val/e.txt"
    label.write_text("1 0.5 0.5 0.5 0.5\n")
    os.utime(label, ns=(0, 10**9))
    prepare(data, tmp_path / "store", workers=1, progress=False)
    assert [r["label_ids"] for r in _read_index(store) if r["split"] == "val"] == ["0", "1"]
    prepare(data, tmp_path / "store", size=16, workers=1, progress=False)
    assert json.loads((store / "dataset.json").read_text())["size"] == 16


def test_default_out_is_a_cache_folder_keyed_by_dataset_and_options(tmp_path, monkeypatch, make_yolo_dataset):
    monkeypatch.setenv("YOLOL_TF_CACHE", str(tmp_path / "cache"))
    data = make_yolo_dataset(tmp_path / "ds", "ultralytics")
    a = prepare(data, workers=1, progress=False)
    b = prepare(data, size=32, workers=1, progress=False)
    assert a.parent == tmp_path / "cache" / "stores" and a.name.startswith("ds-")
    assert a != b and (a / "dataset.json").is_file() and (b / "dataset.json").is_file()
    assert prepare(data, workers=1, progress=False) == a


@pytest.mark.parametrize("workers", [1, 2])
def test_interrupted_run_leaves_no_complete_looking_store(tmp_path, monkeypatch, workers, make_yolo_dataset):
    data = make_yolo_dataset(tmp_path / "ds", "ultralytics")
    calls = []

    def interrupt(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    real = store_module.with_row  # called by the main process for every crop it writes
    monkeypatch.setattr(store_module, "with_row", interrupt)
    with pytest.raises(KeyboardInterrupt):
        prepare(data, tmp_path / "store", workers=workers, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # nothing, not even a partial folder

    monkeypatch.setattr(store_module, "with_row", real)
    store = prepare(data, tmp_path / "store", workers=workers, progress=False)
    before = (store / "dataset.json").read_text()
    calls.clear()
    monkeypatch.setattr(store_module, "with_row", interrupt)
    with pytest.raises(KeyboardInterrupt):
        prepare(data, tmp_path / "store", size=32, workers=workers, progress=False)
    assert (store / "dataset.json").read_text() == before  # the previous complete store survives


def test_a_killed_run_leaves_only_a_hidden_partial_folder_that_the_next_run_removes(
    tmp_path, make_yolo_dataset
):
    data = make_yolo_dataset(tmp_path / "ds", "ultralytics")
    stale = tmp_path / ".store.partial-999999999-abcd"  # no such process
    (stale / "shards").mkdir(parents=True)
    assert not (tmp_path / "store").exists()
    prepare(data, tmp_path / "store", workers=1, progress=False)
    assert not stale.exists() and (tmp_path / "store/dataset.json").is_file()


@pytest.fixture
def bad_dataset(tmp_path: Path, make_yolo_dataset) -> Path:
    """The tiny dataset in tmp_path/ds with one of every problem added."""
    root = tmp_path / "ds"
    data = make_yolo_dataset(root, "ultralytics")
    labels = root / "labels/train"
    with open(labels / "a.txt", "a") as f:
        f.write("7 0.5 0.5 0.1 0.1\n0 0.5 0.5\n0 0.5 x 0.1 0.1\n0 1.2 0.5 0.1 0.1\n0 0.5 0.5 0 0.1\n")
    with open(labels / "b.txt", "ab") as f:
        f.write(b"1 0.5 0.5 0.2 \xe9\n")
    (labels / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (root / "images/train/broken.jpg").write_bytes(b"\xff\xd8 truncated")
    return data


def test_bad_input_converts_what_is_sound_and_reports_each_problem_once(tmp_path, capsys, bad_dataset):
    store = prepare(bad_dataset, tmp_path / "store", workers=1, progress=False)
    assert [r["label_ids"] for r in _read_index(store) if r["split"] == "train"] == EXPECTED_LABELS["train"]
    problems = read_problems(store)
    by_kind = {p.kind: p for p in problems}
    assert len(problems) == len(by_kind) == 8
    a = str(tmp_path / "ds/labels/train/a.txt")
    assert (by_kind["class"].file, by_kind["class"].line, by_kind["class"].value) == (a, 3, "7")
    assert (by_kind["fields"].line, by_kind["number"].value, by_kind["bounds"].line) == (4, "x", 6)
    assert by_kind["zero_size"].line == 7 and by_kind["encoding"].line == 2
    assert by_kind["image"].file.endswith("broken.jpg") and by_kind["orphan_label"].file.endswith("ghost.txt")
    assert json.loads((store / "dataset.json").read_text())["problems"] == 8
    out = capsys.readouterr().err
    assert "8 problems" in out and "class id out of range: 1" in out and f"{a}:3" in out


def test_a_val_that_is_the_train_reports_each_problem_once(tmp_path, capsys, bad_dataset):
    data = bad_dataset
    cfg = yaml.safe_load(data.read_text())
    data.write_text(yaml.safe_dump({**cfg, "val": cfg["train"]}))  # as some exports have it
    store = prepare(data, tmp_path / "store", workers=1, progress=False)
    problems = read_problems(store)
    assert len(problems) == len(set(problems)) == 8
    assert json.loads((store / "dataset.json").read_text())["problems"] == 8
    assert "8 problems" in capsys.readouterr().err
    val = [r["label_ids"] for r in _read_index(store) if r["split"] == "val"]
    assert val == EXPECTED_LABELS["train"]  # still converted


def test_a_box_sticking_out_of_the_image_gives_a_crop_clipped_to_it(tmp_path, make_yolo_dataset):
    # A 64 x 48 image; the box spans x 50..74 (cx 0.97, w 0.375): its values are in [0, 1], its right edge is not.
    data = make_yolo_dataset(tmp_path / "ds", images={"train": {"a": (64, 48, [(0, 10, 10, 30, 30)])}})
    (tmp_path / "ds/labels/train/a.txt").write_text("0 0.968750 0.5 0.375 0.5\n")
    store = prepare(data, tmp_path / "store", workers=1, progress=False)
    assert read_problems(store) == []
    (row,) = _read_index(store)
    assert [int(row[k]) for k in ("x1", "y1", "x2", "y2")] == [50, 12, 64, 36]


def test_strict_fails_on_the_first_problem_naming_file_line_and_value(tmp_path, bad_dataset):
    data = bad_dataset
    (tmp_path / "ds/labels/train/ghost.txt").unlink()
    with pytest.raises(UserError, match=r"a\.txt:3: class id out of range .*'7'") as e:
        prepare(data, tmp_path / "store", strict=True, workers=1, progress=False)
    assert e.value.exit_code == 2
    assert not (tmp_path / "store").exists()


def test_strict_refuses_a_reused_store_that_was_converted_with_problems(tmp_path, bad_dataset):
    data = bad_dataset
    (tmp_path / "ds/labels/train/ghost.txt").unlink()  # leave only problems found while converting
    prepare(data, tmp_path / "store", workers=1, progress=False)
    with pytest.raises(UserError, match=r"class id out of range .*--strict; recorded when"):
        prepare(data, tmp_path / "store", strict=True, workers=1, progress=False)
    assert prepare(data, tmp_path / "store", workers=1, progress=False) == (tmp_path / "store").absolute()


def test_bad_options_and_a_foreign_out_folder_are_user_errors(tmp_path, make_yolo_dataset):
    data = make_yolo_dataset(tmp_path / "ds", "ultralytics")
    for kwargs, match in [({"size": 4}, "size=4"), ({"mode": "tiles"}, "mode='tiles'"),
                          ({"min_visible": 1.5}, "min_visible=1.5"), ({"context": -1}, "context=-1")]:  # fmt: skip
        with pytest.raises(UserError, match=match):
            prepare(data, tmp_path / "store", **kwargs)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a yolol-tf store"):
        prepare(data, tmp_path / "mine", workers=1)
    assert (tmp_path / "mine/notes.txt").read_text() == "keep me"


def test_the_default_store_lives_under_the_cache_with_the_user_folder_expanded(
    tmp_path, monkeypatch, make_yolo_dataset
):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("YOLOL_TF_CACHE", "~/cache")
    data = make_yolo_dataset(tmp_path / "ds", "ultralytics")
    store = prepare(data, workers=1, progress=False)
    assert store.is_relative_to(tmp_path / "cache" / "stores") and (store / "dataset.json").is_file()


def test_a_second_conversion_into_a_store_in_use_is_refused(tmp_path, make_yolo_dataset):
    from yolol_tf.locks import exclusive

    data = make_yolo_dataset(tmp_path / "ds", "ultralytics")
    with exclusive(tmp_path / "store", what="conversion"), pytest.raises(UserError, match="conversion"):
        prepare(data, tmp_path / "store", workers=1, progress=False)
    assert not (tmp_path / "store").exists()
