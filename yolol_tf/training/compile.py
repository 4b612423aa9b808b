"""Compiling a model for training: optimizer (with weight averaging), learning-rate schedule, loss and metrics.

``compile_model`` is shared by ``train`` and every tuner trial, so a search measures exactly what a
training run would.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import keras

from yolol_tf.errors import UserError
from yolol_tf.training.callbacks import LogitF1Score
from yolol_tf.training.config import TrainConfig, effective_loss
from yolol_tf.training.config import steps_per_epoch as steps_for
from yolol_tf.training.losses import get_loss
from yolol_tf.training.schedules import learning_rate


def compile_model(
    model: Any,
    config: TrainConfig,
    info: Any,
    class_freq: Any = None,
    *,
    steps_per_epoch: int | None = None,
    jit_compile: bool | None = None,
) -> Any:
    """Compiles ``model`` with the config's optimizer, learning-rate schedule, loss and training metrics.

    Args:
        model: an uncompiled model that outputs logits.
        config: the run's settings.
        info: the dataset's ``DatasetInfo`` (classes, single-label, samples per split).
        class_freq: per-class positive frequency in the training split (needed by "weighted_bce").
        steps_per_epoch: steps per epoch, for the schedule's length and warmup (see
            :mod:`yolol_tf.training.schedules`); default one pass over the training split.
        jit_compile: XLA on/off; None = ``config.jit``, else the device's default (see
            :mod:`yolol_tf.device`; never Keras' "auto", which picks XLA on CPU, where it is slower).

    Returns:
        The same model, compiled.
    """

    if jit_compile is None:
        from yolol_tf.device import choose, detect_device

        jit_compile = choose(detect_device(), config.mixed_precision, config.jit).jit
    loss_name = effective_loss(config, info)
    if loss_name == "cce" and not info.single_label:
        raise UserError(
            "loss 'cce' needs single-label data (one class per sample); use bce, weighted_bce, focal or asl"
        )
    if steps_per_epoch is None:
        steps_per_epoch = steps_for(config, info)
    lr = learning_rate(
        config.schedule, config.learning_rate, config.epochs, steps_per_epoch, config.warmup_epochs
    )
    optimizer = _optimizer(config, lr)
    _check_ema_horizon(config.ema_decay, config.epochs * steps_per_epoch)

    loss = get_loss(
        loss_name,
        class_freq=class_freq,
        focal_gamma=config.focal_gamma,
        asl_gamma_neg=config.asl_gamma_neg,
        asl_gamma_pos=config.asl_gamma_pos,
        asl_clip=config.asl_clip,
        label_smoothing=config.label_smoothing,
    )
    model.compile(optimizer=optimizer, loss=loss, metrics=training_metrics(info), jit_compile=jit_compile)
    return model


def training_metrics(info: Any) -> list:
    """New instances of the metrics a run logs on logits (and, with a ``val_`` prefix, on validation):
    accuracy for single-label data, else PR-AUC and micro and macro F1."""
    if info.single_label:
        return [keras.metrics.CategoricalAccuracy(name="accuracy")]
    return [
        keras.metrics.AUC(
            curve="PR", multi_label=True, num_labels=info.num_classes, from_logits=True, name="pr_auc"
        ),
        LogitF1Score(average="micro", name="f1_micro"),
        LogitF1Score(average="macro", name="f1_macro"),
    ]


def _check_ema_horizon(decay: float, steps: int) -> None:
    """Warns when the weight average would still lean on the first, untrained weights at the end.

    Keras' average starts at the first step's weights with a fixed decay (no ramp), so after ``steps`` steps
    ``decay ** steps`` of it is still those weights; over 5% (``steps`` under ~3 averaging horizons
    ``1 / (1 - decay)``) validation and the checkpoints judge a blurred early model.
    """
    if decay > 0 and decay**steps > 0.05:
        print(
            f"warning: ema_decay {decay} averages over ~{1 / (1 - decay):.0f} steps, but this run has {steps}: "
            f"{decay**steps:.0%} of the average is still the untrained start. Use a smaller ema_decay "
            f"(e.g. {max(0.9, 1 - 3 / max(steps, 1)):.3f} or less) or more epochs",
            file=sys.stderr,
        )


def _optimizer(config: TrainConfig, lr: Any) -> Any:
    # With ema_decay the optimizer also keeps the moving average of the weights that validation and the
    # checkpoints use (see yolol_tf.training.callbacks.EMAWeights).
    ema = dict(use_ema=config.ema_decay > 0, ema_momentum=config.ema_decay or 0.99)
    if config.optimizer == "adamw":
        opt = keras.optimizers.AdamW(lr, weight_decay=config.weight_decay, **ema)
    elif config.optimizer == "adam":
        opt = keras.optimizers.Adam(lr, **ema)
    elif config.optimizer == "sgd":
        opt = keras.optimizers.SGD(
            lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay or None, **ema
        )
    else:
        opt = keras.optimizers.RMSprop(lr, **ema)
    if config.optimizer in ("adamw", "sgd") and config.weight_decay:
        # Decaying biases and normalisation scales/offsets only hurts; decay the kernels.
        opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return opt


def class_frequency(source: Any, info: Any) -> Any:
    """Per-class share of training samples holding each class (for "weighted_bce")."""
    import numpy as np

    if source.store is not None and (Path(source.store) / "index.csv").is_file():
        import pandas as pd

        index = pd.read_csv(Path(source.store) / "index.csv", usecols=["split", "label_ids"], dtype=str)
        labels = index.loc[index["split"] == "train", "label_ids"].fillna("")
        counts = np.zeros(info.num_classes)
        for ids in labels:
            for i in {int(t) for t in ids.split(";") if t != ""}:
                counts[i] += 1
        return counts / max(1, len(labels))
    total, counts = 0, np.zeros(info.num_classes)
    for _, y in source.dataset("train", 256):
        counts += np.asarray(y).sum(axis=0)
        total += len(y)
    return counts / max(1, total)
