"""The learning rate over a phase's steps: a linear warmup into a cosine decay, or into a constant rate.

Each phase of a run compiles a fresh optimizer whose step counter starts at 0, so a schedule covers one
phase: ``steps`` is the phase's epochs times the steps per epoch. ``BackupAndRestore`` restores the step
counter, so a resumed run continues the curve where the killed one stopped.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="yolol_tf")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Rises linearly from 0 to ``learning_rate`` over ``warmup_steps``, then stays there.

    Args:
        learning_rate: the rate after the warmup.
        warmup_steps: steps of the rise; at step ``s < warmup_steps`` the rate is
            ``learning_rate * s / warmup_steps``.
    """

    def __init__(self, learning_rate: float, warmup_steps: int):
        self.learning_rate = learning_rate
        self.warmup_steps = warmup_steps

    def __call__(self, step: Any) -> Any:
        step = ops.cast(step, "float32")
        fraction = ops.minimum(step / max(1, self.warmup_steps), 1.0)
        return self.learning_rate * fraction

    def get_config(self) -> dict:
        return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps}


def warmup_steps(warmup_epochs: float, steps_per_epoch: int) -> int:
    """Steps of the warmup: ``warmup_epochs`` of ``steps_per_epoch``, at least 1 when there is a warmup."""
    if warmup_epochs <= 0:
        return 0
    return max(1, round(warmup_epochs * steps_per_epoch))


def learning_rate(
    schedule: str, peak: float, epochs: int, steps_per_epoch: int, warmup_epochs: float = 0.0
) -> Any:
    """The optimizer's learning rate for one phase: a float (schedule "plateau", or "none" without
    warmup) or a ``LearningRateSchedule``.

    Args:
        schedule: "cosine" (warmup, then a cosine decay to 0 at the last step), "none" (warmup, then
            constant) or "plateau" (constant here; ``ReduceLROnPlateau`` lowers it; no warmup).
        peak: the rate at the end of the warmup.
        epochs: the phase's epochs.
        steps_per_epoch: steps in one epoch.
        warmup_epochs: epochs of the linear rise from 0 (0 = start at ``peak``).
    """
    warmup = warmup_steps(warmup_epochs, steps_per_epoch)
    total = max(1, epochs * steps_per_epoch)
    if schedule == "cosine":
        if not warmup:
            return keras.optimizers.schedules.CosineDecay(peak, decay_steps=total)
        return keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=max(1, total - warmup), warmup_target=peak, warmup_steps=warmup
        )
    if schedule == "none" and warmup:
        return LinearWarmup(peak, warmup)
    return peak
