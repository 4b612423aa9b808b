"""RandAugment-style augmentation of uint8 crop batches, stateless and seeded, inside tf.data.

Each sample may be flipped left-right, then gets ``NUM_OPS`` ops drawn from :data:`OPS`, each with a
random amount up to its magnitude times ``strength`` (RandAugment, Cubuk et al. 2019, with the
magnitude drawn per sample as in TrivialAugment). Built to cost little next to a small model on a CPU:

- every geometric choice of a sample composes into ONE affine matrix, and the whole batch is warped at
  once: each output pixel's source pixel is computed and fetched by one gather on the uint8 batch
  (nearest sampling, reflected borders);
- every colour op folds into a per-sample 3x3 colour matrix and offset (gains, contrast, saturation),
  applied by one batched matmul at the crop's size, with rounding and clipping back to uint8;
- the whole step is compiled by XLA where TensorFlow can (one fused program instead of dozens of small
  kernels: 0.27-0.31x the time per batch, ``benchmarks/bench_train.py --ops``), else run as a graph.

Geometry stays mild (strength 1: rotation 20 degrees, shear 0.2, shift 10%, zoom 15%) so that a crop's
object stays in view and its labels stay true; borders are filled by reflection.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import tensorflow as tf

GEOMETRY = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y", "zoom")
# Solarize and posterize would each add a pass over the pixels (about half the colour step's cost,
# bench_train.py --ops), so only ops that fold into one matrix and offset per sample are here.
COLOUR = ("brightness", "contrast", "saturation", "autocontrast")
OPS = GEOMETRY + COLOUR
NUM_OPS = 2  # ops drawn per sample (RandAugment's N); a flip comes on top, with probability 1/2
# Each op's largest amount, reached at strength 1; an amount is drawn uniformly up to it (signed where
# it has a direction).
MAGNITUDE = {
    "rotate": math.radians(20),
    "shear_x": 0.2,
    "shear_y": 0.2,
    "translate_x": 0.1,  # of the side
    "translate_y": 0.1,
    "zoom": 0.15,
    "brightness": 0.3 * 255,
    "contrast": 0.5,
    "saturation": 0.5,
    "autocontrast": 1.0,  # blend towards the fully stretched image
}
SIGNED = {"rotate", "shear_x", "shear_y", "translate_x", "translate_y", "zoom", "brightness", "contrast",
          "saturation"}  # fmt: skip
# Nearest costs half of bilinear on uint8 (bench_train.py --ops), as in torchvision's RandAugment;
# flips and whole-pixel shifts are exact either way.
INTERPOLATION = "NEAREST"
_LUMA = (0.299, 0.587, 0.114)

__all__ = ["OPS", "affine_transforms", "augment_batch", "augment_dataset", "colour", "warp"]


def affine_transforms(
    flip: tf.Tensor,
    angle: tf.Tensor,
    shear_x: tf.Tensor,
    shear_y: tf.Tensor,
    zoom: tf.Tensor,
    shift_x: tf.Tensor,
    shift_y: tf.Tensor,
    height: tf.Tensor,
    width: tf.Tensor,
) -> tf.Tensor:
    """Per-sample transforms for ``ImageProjectiveTransformV3`` (output pixel -> input pixel), [B, 8].

    The output is the input flipped left-right where ``flip``, sheared, rotated by ``angle`` (radians)
    (positive: counter-clockwise as displayed) and scaled by ``zoom`` (> 1 enlarges) about the image centre, then moved by ``shift_x``,
    ``shift_y`` pixels (positive: right, down).

    Args:
        flip: bool [B].
        angle, shear_x, shear_y, zoom, shift_x, shift_y: float32 [B].
        height, width: the images' size, float32 scalars.
    """
    f = tf.where(flip, -1.0, 1.0)
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    # M = R(angle) @ [[1, shear_x], [shear_y, 1]] @ diag(f, 1) / zoom maps centred output to input.
    m00, m01 = (cos - sin * shear_y) * f, cos * shear_x - sin
    m10, m11 = (sin + cos * shear_y) * f, sin * shear_x + cos
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    a2 = cx - m00 * cx - m01 * cy - shift_x
    b2 = cy - m10 * cx - m11 * cy - shift_y
    zeros = tf.zeros_like(m00)
    return tf.stack([m00, m01, a2, m10, m11, b2, zeros, zeros], axis=1)


def warp(images: tf.Tensor, transforms: tf.Tensor, interpolation: str = INTERPOLATION) -> tf.Tensor:
    """The batch warped by per-sample ``transforms``, same dtype, borders filled by reflection.

    Nearest sampling is a gather of whole pixels (exact for flips, quarter turns and whole-pixel shifts,
    and compiled by XLA); "BILINEAR" calls TensorFlow's ``ImageProjectiveTransformV3`` (for comparison).

    Args:
        images: [B, H, W, C], any dtype.
        transforms: [B, 8] from :func:`affine_transforms` (output pixel -> input pixel).
        interpolation: "NEAREST" or "BILINEAR".
    """
    if interpolation != "NEAREST":
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transforms, output_shape=tf.shape(images)[1:3],
            fill_value=tf.constant(0.0), interpolation=interpolation, fill_mode="REFLECT",
        )  # fmt: skip
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    t = tf.cast(transforms, tf.float32)[:, :, None, None]  # [B, 8, 1, 1]
    ys = tf.cast(tf.range(height), tf.float32)[None, :, None]
    xs = tf.cast(tf.range(width), tf.float32)[None, None, :]
    # Source coordinates of every output pixel, [B, H, W], rounded to the nearest pixel.
    src_x = tf.cast(tf.round(t[:, 0] * xs + (t[:, 1] * ys + t[:, 2])), tf.int32)
    src_y = tf.cast(tf.round(t[:, 3] * xs + (t[:, 4] * ys + t[:, 5])), tf.int32)
    rows = tf.range(batch)[:, None, None] * height + _reflect(src_y, height)
    index = rows * width + _reflect(src_x, width)
    pixels = tf.reshape(images, [-1, shape[3]])
    return tf.reshape(tf.gather(pixels, tf.reshape(index, [-1])), shape)


def _reflect(index: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """Indices outside ``[0, size)`` mirrored back in, the edge pixel repeated (d c b a | a b c d | d c)."""
    period = 2 * size
    index = tf.math.floormod(index, period)
    return tf.where(index >= size, period - 1 - index, index)


def colour(images: tf.Tensor, matrix: tf.Tensor, offset: tf.Tensor) -> tf.Tensor:
    """Each pixel's channels times a per-sample matrix plus an offset, rounded and clipped, uint8.

    One batched matmul does gain, contrast and saturation together, at the crop's size.

    Args:
        images: uint8 [B, H, W, C].
        matrix: float32 [B, C, C], on pixels as row vectors.
        offset: float32 [B, 1, C].
    """
    shape = tf.shape(images)
    x = tf.reshape(tf.cast(images, tf.float32), [shape[0], -1, shape[3]])
    # +0.5 then truncation rounds, without a pass of its own.
    x = tf.clip_by_value(tf.matmul(x, matrix) + (offset + 0.5), 0.0, 255.0)
    return tf.reshape(tf.cast(x, tf.uint8), shape)


def _draws(seed: tf.Tensor, batch: tf.Tensor, strength: float) -> dict[str, tf.Tensor]:
    """Each op's signed amount per sample, [B]; 0 where the op was not drawn. Also "flip", bool [B]."""
    flip_seed, pick_seed, amount_seed, sign_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    # NUM_OPS different ops per sample: those whose random keys rank lowest.
    keys = tf.random.stateless_uniform([batch, len(OPS)], pick_seed)
    drawn = _ranks(keys) < NUM_OPS  # [B, K]
    amounts = tf.random.stateless_uniform([batch, len(OPS)], amount_seed) * strength
    signs = tf.where(tf.random.stateless_uniform([batch, len(OPS)], sign_seed) < 0.5, -1.0, 1.0)
    scale = tf.constant([MAGNITUDE[op] * (1.0 if op in SIGNED else 0.0) for op in OPS])
    unsigned = tf.constant([0.0 if op in SIGNED else MAGNITUDE[op] for op in OPS])
    values = tf.where(drawn, amounts * (signs * scale + unsigned), 0.0)
    out = dict(zip(OPS, tf.unstack(values, axis=1), strict=True))
    out["flip"] = tf.random.stateless_uniform([batch], flip_seed) < 0.5
    return out


def _ranks(keys: tf.Tensor) -> tf.Tensor:
    """Each key's rank within its row, from 0, ties in index order: ``argsort(argsort(keys))`` by counting the
    smaller keys of each row instead of sorting (K x K comparisons for K ops; XLA's sort is slow on small
    rows: dense's whole augmentation takes 0.78x the time, ``benchmarks/bench_train.py --ops``)."""
    k = keys.shape[-1]
    before = keys[:, None, :] < keys[:, :, None]  # [B, i, j]: key j sorts before key i
    earlier_tie = (keys[:, None, :] == keys[:, :, None]) & tf.constant(np.tri(k, k, -1, dtype=bool))
    return tf.reduce_sum(tf.cast(before | earlier_tie, tf.int32), axis=2)


def _colour_args(images: tf.Tensor, d: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
    """The per-sample matrix and offset of :func:`colour`, with image statistics from every 4th pixel."""
    channels = images.shape[-1]
    sample = tf.cast(images[:, ::4, ::4, :], tf.float32)
    low = tf.reduce_min(sample, axis=[1, 2])  # [B, C]
    high = tf.reduce_max(sample, axis=[1, 2])
    mean = tf.reduce_mean(sample, axis=[1, 2])
    # Autocontrast (blended in by its amount), then brightness, then contrast about the new mean.
    a = d["autocontrast"][:, None]
    stretch = 255.0 / tf.maximum(high - low, 1.0)
    gain = 1.0 + a * (stretch - 1.0)
    offset = -a * low * stretch + d["brightness"][:, None]
    level = tf.reduce_mean(gain * mean + offset, axis=-1, keepdims=True)
    contrast = 1.0 + d["contrast"][:, None]
    gain, offset = gain * contrast, (offset - level) * contrast + level
    matrix = tf.linalg.diag(gain)  # [B, C, C]
    if channels == 3:
        # Saturation s: y -> grey + s (y - grey), grey = y . luma, i.e. y @ (s I + (1 - s) luma 1^T).
        s = (1.0 + d["saturation"])[:, None, None]
        blend = s * tf.eye(3) + (1.0 - s) * tf.constant(_LUMA)[:, None] * tf.ones([1, 3])
        matrix, offset = matrix @ blend, (offset[:, None, :] @ blend)[:, 0]
    return matrix, offset[:, None, :]


def augment_batch(images: tf.Tensor, seed: tf.Tensor, strength: float) -> tf.Tensor:
    """A random flip and ``NUM_OPS`` random ops of :data:`OPS` per sample of a uint8 batch.

    Args:
        images: uint8 [B, H, W, C] (C = 3, or 1 for grayscale: then saturation does nothing).
        seed: int [2], the stateless random seed; the same seed gives the same output (eagerly, in a
            graph and inside ``Dataset.map`` alike).
        strength: in [0, 1], the magnitude: scales every op's largest amount (:data:`MAGNITUDE` at 1).
            0 returns ``images`` unchanged.

    Returns:
        uint8 images of the same shape.
    """
    if strength <= 0:
        return images
    images = tf.convert_to_tensor(images)
    out = _compiled()(images, tf.cast(seed, tf.int64), float(min(strength, 1.0)))
    return tf.ensure_shape(out, images.shape)


def _augment(images: tf.Tensor, seed: tf.Tensor, strength: float) -> tf.Tensor:
    shape = tf.shape(images)
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    d = _draws(seed, shape[0], strength)
    transforms = affine_transforms(
        d["flip"], d["rotate"], d["shear_x"], d["shear_y"], tf.exp(d["zoom"]),
        d["translate_x"] * width, d["translate_y"] * height, height, width,
    )  # fmt: skip
    return colour(warp(images, transforms), *_colour_args(images, d))


@functools.cache  # chosen once per process, on first use
def _compiled():
    """:func:`_augment` compiled by XLA, or as a plain graph where this TensorFlow has no XLA for the CPU."""
    return tf.function(_augment, jit_compile=True if _xla_on_cpu() else None)


def _xla_on_cpu() -> bool:
    """Whether XLA compiles for the CPU here: a probe run eagerly (even when first called while tracing a
    dataset) on the CPU, where tf.data runs the augmentation, whatever accelerator the machine has."""
    try:
        with tf.init_scope(), tf.device("/CPU:0"):
            tf.function(lambda x: x + 1, jit_compile=True)(tf.constant(1))
    except (tf.errors.OpError, NotImplementedError, ValueError):
        return False
    return True


def augment_dataset(
    ds: tf.data.Dataset, strength: float, seed: int | None, fn=augment_batch
) -> tf.data.Dataset:
    """Maps ``fn`` (:func:`augment_batch`) over a batched ``(images, labels)`` dataset, one seed per batch."""
    if strength <= 0:
        return ds
    # A seeded stream of seeds: repeatable with `seed`, different every epoch (rerandomized).
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip((ds, seeds)).map(
        lambda batch, s: (fn(batch[0], s, strength), batch[1]), num_parallel_calls=tf.data.AUTOTUNE
    )
