"""Training: settings, compiling, the fit with its callbacks, the report, and distribution strategies.

    config.py      TrainConfig (inherits DataSettings), load_config, validate, steps_per_epoch
    compile.py     compile_model: optimizer, schedule, loss, training metrics; class_frequency
    losses.py      bce, weighted_bce, focal, asl, cce on logits
    callbacks.py   exact validation mAP, best/last checkpoints, F1 on logits
    loop.py        train(): data -> model -> fit -> run folder
    report.py      thresholds, labels, figures, plots, metrics.json
    distribute.py  strategies (one device, mirrored, multi-worker) and the multi-worker fit loop
    history.py     a run's TensorBoard scalars as a table

Names resolve lazily (PEP 562), so ``import yolol_tf.training`` loads no TensorFlow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from yolol_tf.lazy import lazy_attributes

_EXPORTS = {
    "TrainConfig": "yolol_tf.training.config",
    "load_config": "yolol_tf.training.config",
    "validate": "yolol_tf.training.config",
    "steps_per_epoch": "yolol_tf.training.config",
    "effective_loss": "yolol_tf.training.config",
    "compile_model": "yolol_tf.training.compile",
    "class_frequency": "yolol_tf.training.compile",
    "train": "yolol_tf.training.loop",
}
__all__ = [
    "TrainConfig",
    "class_frequency",
    "compile_model",
    "effective_loss",
    "load_config",
    "steps_per_epoch",
    "train",
    "validate",
]

if TYPE_CHECKING:
    from yolol_tf.training.compile import class_frequency, compile_model
    from yolol_tf.training.config import TrainConfig, effective_loss, load_config, steps_per_epoch, validate
    from yolol_tf.training.loop import train


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
