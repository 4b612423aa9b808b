"""Helpers for the model tests: a fixed random batch and a few training steps."""

from __future__ import annotations

import numpy as np


def random_batch(shape: tuple[int, ...], num_classes: int, batch: int = 4, seed: int = 0):
    """Returns raw-pixel images (float32 0..255) and multi-hot float32 labels."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch, *shape)).astype("float32")
    labels = (rng.uniform(size=(batch, num_classes)) < 0.3).astype("float32")
    return images, labels


def losses_over_steps(model, images, labels, steps: int = 4, learning_rate: float = 1e-3) -> list[float]:
    """Compiles the model with Adam and binary cross-entropy on logits; returns the loss of each step.

    Runs eagerly: for a handful of tiny steps, tracing and optimising a ResNet-50 graph costs far more.
    """
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        run_eagerly=True,
    )
    return [float(np.asarray(model.train_on_batch(images, labels))) for _ in range(steps)]
