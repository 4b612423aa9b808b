"""Reading a store with tf.data: parallel reads, batch-wise parsing, augmentation, prefetch.

Records hold raw uint8 pixels, so a read is a copy, not a decode. Records are batched before parsing
because ``tf.io.parse_example`` on a batch costs about what it costs on one record. Augmentation is a
pure function of a batch and an explicit seed, so it gives the same result eagerly and inside
``Dataset.map`` (tested), and a seeded pipeline is repeatable.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import tensorflow as tf

from yolol_tf.data import mix
from yolol_tf.data.info import DatasetInfo, read_info, read_store_json
from yolol_tf.data.integrity import note_reading
from yolol_tf.errors import UserError

AUTOTUNE = tf.data.AUTOTUNE
SHUFFLE_BYTES = 256 * 2**20  # memory the record shuffle buffer may hold

__all__ = ["DatasetInfo", "augment_batch", "load", "read_info"]


def _transforms(seed: tf.Tensor, batch: tf.Tensor, size: tf.Tensor, strength: float) -> tf.Tensor:
    """Per-sample projective transforms (output pixel -> input pixel): flip, rotation, zoom, shift."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    flip = tf.where(tf.random.stateless_uniform([batch], seeds[0]) < 0.5, -1.0, 1.0)
    angle = tf.random.stateless_uniform([batch], seeds[1], -1.0, 1.0) * (math.radians(15) * strength)
    zoom = 1.0 + tf.random.stateless_uniform([batch], seeds[2], -1.0, 1.0) * (0.15 * strength)
    shift = tf.random.stateless_uniform([batch, 2], seeds[3], -1.0, 1.0) * (0.1 * strength) * size
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    # input = A @ (p - c) + c - shift, with A = R(angle) @ diag(flip, 1) / zoom; c = image centre.
    a0, a1, b0, b1 = cos * flip, -sin, sin * flip, cos
    c = (size - 1.0) / 2.0
    a2 = c - a0 * c - a1 * c - shift[:, 0]
    b2 = c - b0 * c - b1 * c - shift[:, 1]
    zeros = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def augment_batch(images: tf.Tensor, seed: tf.Tensor, strength: float) -> tf.Tensor:
    """Random flips, small rotation/zoom/shift and colour jitter on a batch of uint8 images.

    Args:
        images: uint8 [B, H, W, C] (C = 3, or 1 for grayscale: then no saturation jitter).
        seed: int [2], the stateless random seed; the same seed gives the same output.
        strength: in [0, 1]; scales every range (1: rotation 15 degrees, zoom 15%, shift 10%,
            brightness 25%, contrast and saturation 40%). 0 returns ``images`` unchanged.

    Returns:
        uint8 images of the same shape.
    """
    if strength <= 0:
        return images
    strength = float(min(strength, 1.0))
    seed = tf.cast(seed, tf.int64)
    shape = tf.shape(images)
    batch = shape[0]
    channels = images.shape[-1]
    geo_seed, b_seed, c_seed, s_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    x = tf.cast(images, tf.float32)
    transforms = _transforms(geo_seed, batch, tf.cast(shape[1], tf.float32), strength)
    x = tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=shape[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT",
    )  # fmt: skip
    delta = tf.random.stateless_uniform([batch, 1, 1, 1], b_seed, -1.0, 1.0) * (0.25 * 255 * strength)
    contrast = 1.0 + tf.random.stateless_uniform([batch, 1, 1, 1], c_seed, -1.0, 1.0) * (0.4 * strength)
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    x = (x - mean) * contrast + mean + delta
    if channels == 3:
        saturation = 1.0 + tf.random.stateless_uniform([batch, 1, 1, 1], s_seed, -1.0, 1.0) * (0.4 * strength)
        grey = tf.reduce_sum(x * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)
        x = (x - grey) * saturation + grey
    x = tf.round(tf.clip_by_value(x, 0.0, 255.0))
    return tf.ensure_shape(tf.cast(x, tf.uint8), images.shape)


def augment_dataset(ds: tf.data.Dataset, strength: float, seed: int | None) -> tf.data.Dataset:
    """Maps :func:`augment_batch` over a batched ``(images, labels)`` dataset, one seed per batch."""
    if strength <= 0:
        return ds
    # A seeded stream of seeds: repeatable with `seed`, different every epoch (rerandomized).
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip((ds, seeds)).map(
        lambda batch, s: (augment_batch(batch[0], s, strength), batch[1]), num_parallel_calls=AUTOTUNE
    )


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
) -> tf.data.Dataset:
    """A store's split as batches of (uint8 images [B, S, S, 3], float32 multi-hot [B, num_classes]).

    Args:
        store: the store folder written by :func:`yolol_tf.data.prepare`.
        split: "train", "val" or "test".
        batch_size: samples per batch.
        training: shuffle shards and records (reshuffled every epoch) and apply ``augment``. When False
            the order is that of ``index.csv``.
        augment: augmentation strength in [0, 1] (see :func:`augment_batch`); used only when training.
        mixup: probability that a training sample is mixed with another (:mod:`yolol_tf.data.mix`).
        cutmix: probability that a training sample gets a region of another pasted in; off, with a
            warning, for a store without object geometry (prepared before store version 3).
        seed: makes shuffling and augmentation repeatable.
        drop_remainder: drop a last, smaller batch (keeps batch shapes static).
        repeat: repeat forever (for ``steps_per_epoch``).

    Raises:
        UserError: for a missing split or a bad argument, and for a damaged store (a shard missing or of
            another size than dataset.json records, index.csv missing, dataset.json edited to a size or
            class count its shards do not hold), found here from the files' sizes, before TensorFlow
            reads them. A record damaged in place still raises ``tf.errors.DataLossError`` while iterating;
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
    if training:
        ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed)
        ds = ds.interleave(
            tf.data.TFRecordDataset, cycle_length=min(len(files), 8), block_length=16,
            num_parallel_calls=AUTOTUNE, deterministic=seed is not None,
        )  # fmt: skip
        buffer = min(crops, max(1024, SHUFFLE_BYTES // (size * size * 3 + num_classes)))
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    else:
        # Sequential reads keep index.csv order; reading raw records is cheap, parsing runs in parallel.
        ds = tf.data.TFRecordDataset(files, buffer_size=4 * 2**20)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if not repeat:
        # A known length gives Keras its progress bar and steps per epoch without a first full pass.
        batches = crops // batch_size if drop_remainder else -(-crops // batch_size)
        ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    features = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.string),
        **(mix.GEOMETRY_FEATURES if cutmix > 0 else {}),
    }

    def parse(serialized: tf.Tensor) -> tuple[tf.Tensor, ...]:
        ex = tf.io.parse_example(serialized, features)
        images = tf.reshape(tf.io.decode_raw(ex["image"], tf.uint8), [-1, size, size, 3])
        labels = tf.reshape(tf.io.decode_raw(ex["label"], tf.uint8), [-1, num_classes])
        images.set_shape([serialized.shape[0], size, size, 3])  # a static batch with drop_remainder
        labels.set_shape([serialized.shape[0], num_classes])
        geometry = mix.parse_geometry(ex, max_objects) if cutmix > 0 else ()
        return images, tf.cast(labels, tf.float32), *geometry

    ds = ds.map(parse, num_parallel_calls=AUTOTUNE, deterministic=not training or seed is not None)
    if training:
        min_visible = float(meta.get("options", {}).get("min_visible", 0.5))
        ds = mix.mix_dataset(ds, mixup=mixup, cutmix=cutmix, min_visible=min_visible, seed=seed)
        ds = augment_dataset(ds, augment, seed)
    return ds.prefetch(AUTOTUNE)
