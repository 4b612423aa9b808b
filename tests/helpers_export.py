"""Tiny models, stores and run folders for the export and predict tests.

Everything here is small enough to build and train in a second or two on a CPU: 32x32 crops, three
classes that a linear probe separates (class k brightens colour channel k), a handful of filters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests import helpers_pipeline
from yolol_tf.runs import Labels

SIZE = 32
NAMES = ["red", "green", "blue"]


def synthetic_crops(n: int, *, seed: int = 0, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Uint8 crops and multi-hot labels where class k (k < 3) lifts channel k in a centred square.

    Args:
        n: how many crops.
        seed: random seed.
        size: crop side in pixels.
    """
    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(NAMES))) < 0.4).astype(np.float32)
    y[y.sum(axis=1) == 0, rng.integers(0, len(NAMES))] = 1.0  # every crop shows something
    x = rng.integers(0, 70, size=(n, size, size, 3)).astype(np.float32)
    lo, hi = size // 4, size - size // 4
    for k in range(len(NAMES)):
        x[y[:, k] == 1, lo:hi, lo:hi, k] += 150.0
    return np.clip(x, 0, 255).astype(np.uint8), y


def tiny_model(num_classes: int = len(NAMES), size: int = SIZE, *, extra_layer=None):
    """The contract's model shape in miniature: raw pixels in, one logit per class out.

    Args:
        num_classes: output units.
        size: input side.
        extra_layer: an optional layer applied after the rescaling (to inject an op).
    """
    import keras

    inputs = keras.Input((size, size, 3), dtype="float32", name="pixels")
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    if extra_layer is not None:
        x = extra_layer(x)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="tiny")


def train_tiny(model, *, steps: int = 60, seed: int = 0):
    """Fits ``model`` briefly on synthetic crops so its mAP means something; returns the model."""
    import keras

    keras.utils.set_random_seed(seed)
    x, y = synthetic_crops(256, seed=seed + 1)
    model.compile(
        optimizer=keras.optimizers.Adam(0.03), loss=keras.losses.BinaryCrossentropy(from_logits=True)
    )
    model.fit(x.astype(np.float32), y, batch_size=32, epochs=max(1, steps // 8), verbose=0)
    return model


def write_store(root: Path, *, size: int = SIZE, counts: dict[str, int] | None = None, seed: int = 0) -> Path:
    """Writes a store in the contract's layout (dataset.json, index.csv, TFRecord shards).

    Args:
        root: the store folder to create.
        size: crop side.
        counts: crops per split; default 96 train, 48 val.
        seed: random seed.
    """
    counts = counts or {"train": 96, "val": 48}
    samples = {}
    for i, (split, n) in enumerate(counts.items()):
        x, y = synthetic_crops(n, seed=seed + 10 + i, size=size)
        samples[split] = list(zip(x, y, strict=True))
    return helpers_pipeline.write_store(root, samples, NAMES, size=size)


def val_crops(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """The crops (and labels) of the run's store's val split, in the order export checks on them."""
    from yolol_tf.data import open_data
    from yolol_tf.runs import read_run_config

    source = open_data(str(read_run_config(run)["data"]), size=SIZE)
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in source.dataset("val", 64)), strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def write_run(run: Path, model, store: Path, *, activation: str = "sigmoid", thresholds=None) -> Path:
    """A run folder as training leaves it (only what export and predict read).

    Args:
        run: folder to create.
        model: a keras model to save as best.keras.
        store: the store named as ``data`` in config.yaml.
        activation: labels.json activation.
        thresholds: per-class thresholds (default 0.5).
    """
    run.mkdir(parents=True, exist_ok=True)
    model.save(run / "best.keras")
    size = int(model.inputs[0].shape[1])
    Labels(list(NAMES), thresholds or [0.5] * len(NAMES), activation, (size, size, 3)).save(
        run / "labels.json"
    )
    (run / "config.yaml").write_text(f"model: cnn\ndata: {store}\nsize: {size}\n")
    return run


def int8_fragile_model(trained, *, span: float = 1e4, seed: int = 9):
    """``trained`` (a :func:`tiny_model`) with a layer int8 quantisation breaks on purpose.

    A Dense layer ``wide`` goes between the pooled features and the logits: it passes the features
    through unchanged and adds one channel spanning about ±``span`` that the logits ignore (weight 0).
    In float the outputs are exactly the trained model's; in int8 the wide tensor is quantised with one
    scale for all its channels (about span / 127 per step), which rounds every real feature to nothing.
    Keeping ``wide`` and ``logits`` in float (so the wide tensor never goes through int8) recovers it.

    Args:
        trained: a trained :func:`tiny_model`.
        span: the extra channel's half-range on synthetic crops.
        seed: seed of the crops the span is measured on.
    """
    import keras

    features = trained.get_layer("logits").input
    n = int(features.shape[-1])
    wide = keras.layers.Dense(n + 1, name="wide")
    logits = keras.layers.Dense(int(trained.outputs[0].shape[-1]), name="logits")
    model = keras.Model(trained.inputs[0], logits(wide(features)), name="tiny_fragile")
    signs = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    x, _ = synthetic_crops(64, seed=seed)
    extra = keras.Model(trained.inputs[0], features)(x.astype(np.float32)).numpy() @ signs
    column = signs * span / np.abs(extra).max()
    wide.set_weights(
        [np.concatenate([np.eye(n), column[:, None]], axis=1).astype(np.float32), np.zeros(n + 1, np.float32)]
    )
    kernel, bias = trained.get_layer("logits").get_weights()
    logits.set_weights([np.concatenate([kernel, np.zeros((1, kernel.shape[1]))]).astype(np.float32), bias])
    return model


def cumprod_layer():
    """A layer whose op (tf.Cumprod) has no TFLite builtin kernel: conversion would need Flex."""
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="tests_export")
    class Cumprod(keras.layers.Layer):
        """Cumulative product over channels (a stand-in for any op that needs Flex)."""

        def call(self, x):
            return tf.math.cumprod(x, axis=-1)

    return Cumprod()


def write_images(folder: Path, *, seed: int = 3) -> tuple[list[Path], np.ndarray]:
    """Writes synthetic crops as non-square images of several formats; returns paths and labels.

    Each image is a crop upscaled to 48x40 (so letterboxing pads) in png, jpg, bmp or an upper-case
    .PNG, some in a sub-folder.
    """
    import cv2

    x, y = synthetic_crops(8, seed=seed)
    paths = []
    for i, crop in enumerate(x):
        ext = [".png", ".PNG", ".bmp", ".png"][i % 4]
        path = folder / ("sub" if i % 2 else "") / f"img{i}{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        image = cv2.resize(crop, (40, 48), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths, y


def single_class_crop(k: int, size: int = SIZE, *, seed: int = 0) -> np.ndarray:
    """A uint8 crop showing only class k (channel k lifted in the centre square)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 70, size=(size, size, 3)).astype(np.float32)
    lo, hi = size // 4, size - size // 4
    x[lo:hi, lo:hi, k] += 150.0
    return np.clip(x, 0, 255).astype(np.uint8)


def cli(*args: str) -> int:
    """Runs ``yolol-tf ARGS`` in-process; returns its exit status."""
    from yolol_tf.cli import main

    try:
        return main(list(args))
    except SystemExit as e:  # Typer exits with the status after a command that succeeds
        return e.code or 0
