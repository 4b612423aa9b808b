"""Tiny training and search settings: a cnn of width 8 or less at 32 px, one epoch, seconds on 2 CPU cores."""

from __future__ import annotations

import os
from typing import Any

# The search space of tune_config: tiny cnn widths and depths.
TINY_SPACE = "width: [4, 8]\ndepths: [1-1]\nbatch_size: 16\n"


def train_config(data: str | os.PathLike, out: str | os.PathLike, **overrides: Any):
    """A TrainConfig for a tiny cnn on ``data``, written to ``out``; ``overrides`` replace any setting."""
    from yolol_tf.training import TrainConfig

    values = dict(
        model="cnn", model_options={"width": 8, "depths": (1,)}, data=str(data), size=32, epochs=1,
        batch_size=16, augment=0.0, out=str(out), patience=0, mixed_precision="off", jit=False,
    )  # fmt: skip
    values.update(overrides)
    return TrainConfig(**values)


def tune_config(out: str | os.PathLike, **overrides: Any):
    """A TuneConfig for a 2-trial random search of a tiny cnn at 32 px, written to ``out``.

    The space file (:data:`TINY_SPACE`) is written beside ``out``, as tiny_space.yaml.
    """
    from yolol_tf.config import atomic_write_text
    from yolol_tf.tuning.search import TuneConfig

    out = str(out)
    space = os.path.join(os.path.dirname(os.path.abspath(out)), "tiny_space.yaml")
    if not os.path.exists(space):
        atomic_write_text(space, TINY_SPACE)
    values = dict(
        model="cnn", size=32, tuner="random", max_trials=2, epochs=1, out=out, space=space, verbose=0
    )
    values.update(overrides)
    return TuneConfig(**values)
