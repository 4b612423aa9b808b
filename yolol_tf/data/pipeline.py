"""Reading a store with tf.data: in memory or streamed, batch-wise parsing, augmentation, prefetch.

Records hold raw uint8 pixels, so a read is a copy, not a decode. Records are batched before parsing
because ``tf.io.parse_example`` on a batch costs about what it costs on one record. A training split
whose records fit :data:`CACHE_BYTES` is read and parsed once, when the dataset is made, and held in
memory as whole tensors: each epoch shuffles the sample indices and a batch is one gather per tensor, with
no record read or parsed again. A larger split streams from its shards through a bounded shuffle buffer.
Augmentation (:mod:`yolol_tf.data.augment`) is a pure function of a batch and an explicit seed, so it gives
the same result eagerly and inside ``Dataset.map`` (tested), and a seeded pipeline is repeatable.
"""

from __future__ import annotations

import os
from pathlib import Path

import tensorflow as tf

from yolol_tf.data import mix
from yolol_tf.data.augment import augment_batch, augment_dataset
from yolol_tf.data.info import DatasetInfo, read_info, read_store_json
from yolol_tf.data.integrity import note_reading
from yolol_tf.errors import UserError

AUTOTUNE = tf.data.AUTOTUNE
PREFETCH_BATCHES = 2  # batches ready ahead of the model: the steps are far slower than the pipeline
SHUFFLE_BYTES = 256 * 2**20  # memory the record shuffle buffer of a streamed split may hold
# A training split whose records take at most this is held in memory after its first epoch: 1 GiB, or
# an eighth of the machine's memory where that is less. Later epochs then read and parse no file.


def _cache_budget() -> int:
    try:
        return min(2**30, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 8)
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        return 2**30


CACHE_BYTES = _cache_budget()

__all__ = ["DatasetInfo", "augment_batch", "load", "read_info"]


def _check_args(split: str, splits: dict, batch_size: int, augment: float, store: Path) -> None:
    if split not in splits:
        raise UserError(f"{store}: no split {split!r} in this store. Splits: {', '.join(splits) or 'none'}")
    if splits[split]["crops"] == 0 or not splits[split]["shards"]:
        raise UserError(f"{store}: split {split!r} has no samples")
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
    if not 0.0 <= augment <= 1.0:
        raise UserError(f"augment must be in [0, 1]. Received: augment={augment}")


def load(
    store: str | os.PathLike,
    split: str,
    batch_size: int = 32,
    *,
    training: bool = False,
    augment: float = 0.0,
    mixup: float = 0.0,
    cutmix: float = 0.0,
    seed: int | None = None,
    drop_remainder: bool = False,
    repeat: bool = False,
    memory: bool = True,
) -> tf.data.Dataset:
    """A store's split as batches of (uint8 images [B, S, S, 3], float32 multi-hot [B, num_classes]).

    Args:
        store: the store folder written by :func:`yolol_tf.data.prepare`.
        split: "train", "val" or "test".
        batch_size: samples per batch.
        training: shuffle the records (reshuffled every epoch; all of them where the split fits
            :data:`CACHE_BYTES` and is then held in memory, else shards and a bounded buffer) and apply
            ``augment``. When False the order is that of ``index.csv``.
        augment: augmentation strength in [0, 1] (see :func:`augment_batch`); used only when training.
        mixup: probability that a training sample is mixed with another (:mod:`yolol_tf.data.mix`).
        cutmix: probability that a training sample gets a region of another pasted in; off, with a
            warning, for a store without object geometry (prepared before store version 3).
        seed: makes shuffling and augmentation repeatable.
        drop_remainder: drop a last, smaller batch (keeps batch shapes static).
        repeat: repeat forever (for ``steps_per_epoch``).
        memory: hold a training split that fits :data:`CACHE_BYTES` in memory as parsed tensors. False
            keeps the records a file-reading dataset (split between workers by file), held in memory
            after their first epoch where they fit.

    Raises:
        UserError: for a missing split or a bad argument, and for a damaged store (a shard missing or of
            another size than dataset.json records, index.csv missing, dataset.json edited to a size or
            class count its shards do not hold), found here from the files' sizes, before TensorFlow
            reads them. A record damaged in place still raises ``tf.errors.DataLossError`` (here, for a
            split held in memory, else while iterating);
            :func:`yolol_tf.data.integrity.read_error` turns it into one line naming the store and shard
            (the CLI does so for every command).

    Example:
        >>> ds = load("store", "train", 64, training=True, augment=0.5)  # doctest: +SKIP
    """
    store = Path(store)
    meta = read_store_json(store)
    _check_args(split, meta["splits"], batch_size, augment, store)
    mix.check(mixup, cutmix)
    max_objects = int(meta.get("max_objects", 0))
    cutmix = mix.usable_cutmix(cutmix, max_objects > 0, str(store)) if training else 0.0
    size, num_classes = int(meta["size"]), int(meta["num_classes"])
    note_reading(store, meta["splits"][split]["shards"])
    files = [str(store / s) for s in meta["splits"][split]["shards"]]
    crops = int(meta["splits"][split]["crops"])
    split_bytes = sum(os.path.getsize(f) for f in files)  # what the records take, framing and all
    record_bytes = max(1, split_bytes // crops)
    parse = _parser(size, num_classes, max_objects if cutmix > 0 else 0)
    in_memory = training and split_bytes <= CACHE_BYTES
    if in_memory and memory:
        ds = _gathered(_read_whole(files, parse), crops, batch_size, seed, repeat, drop_remainder)
    else:
        ds = _records(files, crops, record_bytes, training=training, cache=in_memory, seed=seed)
        if repeat:
            ds = ds.repeat()
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        ds = ds.map(
            lambda serialized: _float_labels(*parse(serialized)),
            num_parallel_calls=AUTOTUNE, deterministic=not training or seed is not None,
        )  # fmt: skip
    if not repeat:
        # A known length gives Keras its progress bar and steps per epoch without a first full pass.
        batches = crops // batch_size if drop_remainder else -(-crops // batch_size)
        ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    if training:
        min_visible = float(meta.get("options", {}).get("min_visible", 0.5))
        ds = mix.mix_dataset(ds, mixup=mixup, cutmix=cutmix, min_visible=min_visible, seed=seed)
        ds = augment_dataset(ds, augment, seed)
    return finish(ds)


def finish(ds: tf.data.Dataset) -> tf.data.Dataset:
    """``ds`` prefetched, with tf.data's autotuning off.

    The autotuner runs a thread that sleeps between its optimizations for longer and longer (up to a
    minute) while an iterator lives, and destroying the iterator waits for it: 0-1.3 s at the end of every
    short fit, and 25-35 s at the end of one in three 70-second cnn runs, after the last epoch. Without it
    the end is immediate. The parallel maps keep ``AUTOTUNE``, which then means one call per core.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(PREFETCH_BATCHES).with_options(options)


def _records(
    files: list[str], crops: int, record_bytes: int, *, training: bool, cache: bool, seed: int | None
) -> tf.data.Dataset:
    """The serialized records: in index.csv order, or shuffled for training (all of them where ``cache``)."""
    if not training:
        # Sequential reads keep index.csv order; reading raw records is cheap, parsing runs in parallel.
        return tf.data.TFRecordDataset(files, buffer_size=4 * 2**20)
    if cache:
        # Read once in index order, then a full shuffle of the whole split, different every epoch.
        ds = tf.data.TFRecordDataset(files, buffer_size=4 * 2**20).cache()
        return ds.shuffle(crops, seed=seed, reshuffle_each_iteration=True)
    ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed)
    ds = ds.interleave(
        tf.data.TFRecordDataset, cycle_length=min(len(files), 8), block_length=16,
        num_parallel_calls=AUTOTUNE, deterministic=seed is not None,
    )  # fmt: skip
    buffer = min(crops, max(1024, SHUFFLE_BYTES // record_bytes))
    return ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)


def _parser(size: int, num_classes: int, max_objects: int):
    """Parses a batch of serialized records: uint8 images and labels, and geometry where ``max_objects``."""
    features = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.string),
        **(mix.GEOMETRY_FEATURES if max_objects else {}),
    }

    def parse(serialized: tf.Tensor) -> tuple[tf.Tensor, ...]:
        ex = tf.io.parse_example(serialized, features)
        images = tf.reshape(tf.io.decode_raw(ex["image"], tf.uint8), [-1, size, size, 3])
        labels = tf.reshape(tf.io.decode_raw(ex["label"], tf.uint8), [-1, num_classes])
        images.set_shape([serialized.shape[0], size, size, 3])  # a static batch with drop_remainder
        labels.set_shape([serialized.shape[0], num_classes])
        geometry = mix.parse_geometry(ex, max_objects) if max_objects else ()
        return images, labels, *geometry

    return parse


def _float_labels(images: tf.Tensor, labels: tf.Tensor, *geometry: tf.Tensor) -> tuple[tf.Tensor, ...]:
    return images, tf.cast(labels, tf.float32), *geometry


def _read_whole(files: list[str], parse) -> tuple[tf.Tensor, ...]:
    """Every record of ``files`` parsed, in order, as whole tensors ([N, ...] each)."""
    ds = tf.data.TFRecordDataset(files, buffer_size=4 * 2**20).batch(1024)
    parts = list(ds.map(parse, num_parallel_calls=AUTOTUNE))
    return tuple(tf.concat(column, axis=0) for column in zip(*parts, strict=True))


def _gathered(
    arrays: tuple[tf.Tensor, ...], crops: int, batch_size: int, seed: int | None, repeat: bool,
    drop_remainder: bool,
) -> tf.data.Dataset:  # fmt: skip
    """Batches gathered from tensors held in memory: a new order of all samples every epoch."""
    ds = tf.data.Dataset.range(crops).shuffle(crops, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.map(lambda index: _float_labels(*(tf.gather(a, index) for a in arrays)))
