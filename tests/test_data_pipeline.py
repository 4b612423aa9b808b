"""Reading a store with tf.data: values, order, shuffling, augmentation, and store errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from yolol_tf.data import DatasetInfo, augment_batch, load, open_data, read_info
from yolol_tf.errors import UserError


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, make_store) -> Path:
    # Shards of 8, so that reading in order is tested across shard boundaries.
    return make_store(
        tmp_path_factory.mktemp("store"),
        pattern="random",
        counts={"train": 21, "val": 10},
        size=8,
        num_classes=4,
        records_per_shard=8,
    )


def _collect(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def _index_labels(store: Path, split: str, num_classes: int) -> np.ndarray:
    index = pd.read_csv(store / "index.csv", dtype={"label_ids": str})
    rows = index[index["split"] == split]["label_ids"]
    out = np.zeros((len(rows), num_classes), np.float32)
    for i, ids in enumerate(rows):
        out[i, [int(k) for k in ids.split(";")]] = 1
    return out


def test_read_info(store: Path) -> None:
    info = read_info(store)
    assert info == DatasetInfo(
        names=["class0", "class1", "class2", "class3"], num_classes=4, image_shape=(8, 8, 3),
        counts={"train": 21, "val": 10}, single_label=False, source=str(store),
    )  # fmt: skip


def test_load_yields_the_stored_samples_in_index_order(store: Path) -> None:
    ds = load(store, "train", batch_size=4)
    assert ds.element_spec[0] == tf.TensorSpec([None, 8, 8, 3], tf.uint8)
    assert ds.element_spec[1] == tf.TensorSpec([None, 4], tf.float32)
    images, labels = _collect(ds)
    assert images.shape == (21, 8, 8, 3) and labels.shape == (21, 4)
    assert images[:, 0, 0, 0].tolist() == list(range(21))  # across 3 shards, in order
    np.testing.assert_array_equal(labels, _index_labels(store, "train", 4))
    np.testing.assert_array_equal(_collect(load(store, "train", batch_size=4))[0], images)  # repeatable


def test_training_shuffles_each_epoch_and_a_seed_repeats_it(store: Path) -> None:
    ds = load(store, "train", batch_size=5, training=True, seed=3)
    first = [_collect(ds)[0][:, 0, 0, 0].tolist() for _ in range(2)]
    assert sorted(first[0]) == list(range(21))
    assert first[0] != list(range(21)) and first[0] != first[1]
    again = _collect(load(store, "train", batch_size=5, training=True, seed=3))[0][:, 0, 0, 0].tolist()
    assert again == first[0]
    # Pixels and labels travel together through the shuffle.
    images, labels = _collect(ds)
    reference = _index_labels(store, "train", 4)
    np.testing.assert_array_equal(labels, reference[images[:, 0, 0, 0]])


def test_drop_remainder_and_repeat(store: Path) -> None:
    sizes = [int(x.shape[0]) for x, _ in load(store, "val", batch_size=4)]
    assert sizes == [4, 4, 2]
    assert int(load(store, "val", batch_size=4).cardinality()) == 3  # Keras knows the epoch length
    assert int(load(store, "train", 4, training=True, augment=0.5, drop_remainder=True).cardinality()) == 5
    ds = load(store, "val", batch_size=4, drop_remainder=True, repeat=True)
    assert ds.element_spec[0].shape[0] == 4
    assert sum(1 for _ in ds.take(7)) == 7


def test_augmentation_only_when_training(store: Path) -> None:
    plain, _ = _collect(load(store, "val", batch_size=4))
    not_training, _ = _collect(load(store, "val", batch_size=4, augment=1.0))
    np.testing.assert_array_equal(not_training, plain)
    augmented, labels = _collect(load(store, "val", batch_size=4, training=True, augment=1.0, seed=0))
    assert augmented.dtype == np.uint8 and augmented.shape == plain.shape
    assert not np.array_equal(np.sort(augmented.reshape(10, -1), 0), np.sort(plain.reshape(10, -1), 0))
    assert sorted(labels.sum(1).tolist()) == sorted(_index_labels(store, "val", 4).sum(1).tolist())


def _picture(batch: int = 3, side: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side]
    base = np.stack([xx * 8, yy * 8, (xx + yy) * 4], -1).clip(0, 255).astype(np.uint8)
    return np.stack([base] * batch)


def test_augment_batch_eager_equals_dataset_map() -> None:
    images, seed = _picture(), tf.constant([5, 9], tf.int64)
    eager = augment_batch(tf.constant(images), seed, 0.7)
    mapped = next(iter(tf.data.Dataset.from_tensors(images).map(lambda x: augment_batch(x, seed, 0.7))))
    graph = tf.function(augment_batch, reduce_retracing=True)(tf.constant(images), seed, 0.7)
    assert eager.dtype == tf.uint8 and eager.shape == images.shape
    np.testing.assert_array_equal(eager.numpy(), mapped.numpy())
    np.testing.assert_array_equal(eager.numpy(), graph.numpy())


def test_augment_batch_strength() -> None:
    images = _picture()
    seed = tf.constant([1, 2], tf.int64)
    np.testing.assert_array_equal(augment_batch(images, seed, 0.0), images)
    weak = np.abs(augment_batch(images, seed, 0.05).numpy().astype(int) - images).mean()
    strong = np.abs(augment_batch(images, seed, 1.0).numpy().astype(int) - images).mean()
    assert 0 < weak < strong
    # Each sample of a batch gets its own draw.
    out = augment_batch(images, seed, 1.0).numpy()
    assert not np.array_equal(out[0], out[1])
    grey = augment_batch(images[..., :1], seed, 1.0)
    assert grey.shape == (3, 32, 32, 1) and grey.dtype == tf.uint8


def test_missing_or_incomplete_store_is_a_user_error(tmp_path: Path, store: Path) -> None:
    with pytest.raises(UserError, match="dataset.json is missing"):
        read_info(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    meta = json.loads((store / "dataset.json").read_text())
    del meta["splits"]
    (broken / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="'splits' is missing"):
        load(broken, "train")
    with pytest.raises(UserError, match="no split 'test'.*train, val"):
        load(store, "test")
    with pytest.raises(UserError, match="augment must be in"):
        load(store, "train", augment=2.0)


def test_open_data_on_a_store(store: Path) -> None:
    source = open_data(store)
    assert source.store == store and source.splits == ["train", "val"]
    assert source.info.counts == {"train": 21, "val": 10}
    x, y = next(iter(source.dataset("val", 10)))
    assert x.shape == (10, 8, 8, 3) and y.shape == (10, 4)
    with pytest.raises(UserError, match="No 'test' split"):
        source.dataset("test")
    with pytest.raises(UserError, match="--val is only for Sign-MNIST"):
        open_data(store, val="other.csv")
    with pytest.raises(UserError, match="not found"):
        open_data(store / "nothing-here")


@pytest.mark.large
def test_demo_data_prepared_and_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLOL_TF_CACHE", str(tmp_path / "cache"))
    # One worker: prepare forks its pool, and a fork after OpenCV used threads (other tests) can hang.
    source = open_data(None, size=32, workers=1)
    assert source.splits == ["train", "val", "test"]
    assert source.info.num_classes == 10 and source.info.image_shape == (32, 32, 3)
    images, labels = _collect(source.dataset("val", 64))
    assert images.shape == (source.info.counts["val"], 32, 32, 3)
    np.testing.assert_array_equal(labels, _index_labels(source.store, "val", 10))
    assert labels.sum(0).min() > 0  # every class appears
    assert open_data(None, size=32, workers=1).store == source.store  # prepared once, then reused
