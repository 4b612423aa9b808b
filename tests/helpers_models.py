"""Helpers for the model tests: a fixed random batch, a few training steps, and Python in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


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


def run_fresh(code: str) -> str:
    """Runs ``code`` in a new Python process (nothing imported yet) from the repository; returns its last
    line of output, and fails the test with its error output if it fails."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return (done.stdout.strip().splitlines() or [""])[-1]
