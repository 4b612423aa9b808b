"""The settings of one training run: ``TrainConfig``, its checks, and the values derived from it.

Keras-free, so that the CLI, the tuner's search spaces and a run's ``config.yaml`` can be read without
loading TensorFlow. ``TrainConfig`` inherits :class:`~yolol_tf.data.settings.DataSettings`, so the data
options are declared once for every stage and an experiments YAML keeps its flat keys.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolol_tf import config as config_lib
from yolol_tf import runs
from yolol_tf.data.settings import DataSettings
from yolol_tf.errors import UserError

LOSSES = ("bce", "weighted_bce", "focal", "asl", "cce")
SCHEDULES = ("cosine", "plateau", "none")
OPTIMIZERS = ("adamw", "adam", "sgd", "rmsprop")


def _default_model() -> str:
    from yolol_tf.models import DEFAULT_MODEL

    return DEFAULT_MODEL


@dataclass(frozen=True)
class TrainConfig(DataSettings):
    """Settings of one training run (the keys of an ``experiments/*.yaml`` file; CLI flags override them).

    These are the defaults every model shares. :func:`load_config` (what ``yolol-tf train`` uses) puts a
    model's own measured defaults (``ModelSpec.train_defaults``, e.g. the cnn's epochs) under the YAML and
    the flags; ``TrainConfig(...)`` built directly holds exactly what it is given.

    The data settings (``data``, ``val``, ``size``, ``context``, ``min_visible``, ``min_box``, ``mode``)
    are :class:`~yolol_tf.data.settings.DataSettings`'; config.yaml records the size the data has.

    Args:
        model: a name of ``yolol_tf.models.MODEL_NAMES``.
        model_options: keyword options of the model builder (e.g. ``{"small_input": True}``).
        epochs: maximum number of epochs (early stopping may end sooner).
        batch_size: samples per step.
        learning_rate: peak learning rate.
        optimizer: "adamw", "adam", "sgd" (Nesterov momentum 0.9) or "rmsprop".
        weight_decay: decoupled weight decay (adamw, sgd); biases and normalisation are not decayed.
        loss: "bce", "weighted_bce", "focal", "asl" or "cce" (single-label; chosen automatically for
            single-label data when "bce" is set).
        focal_gamma: focal loss exponent.
        asl_gamma_neg: asymmetric loss exponent on negatives.
        asl_gamma_pos: asymmetric loss exponent on positives.
        asl_clip: asymmetric loss probability margin.
        label_smoothing: target smoothing in [0, 1).
        augment: augmentation strength in [0, 1] (0 = none).
        mixup: probability in [0, 1] that a training sample is blended with another, labelled with both
            labels' union (``yolol_tf.data.mix``).
        cutmix: probability in [0, 1] that a training sample gets a rectangle of another pasted in, labelled
            by the crops' ``min_visible`` rule (off, with a warning, for data without object geometry).
        schedule: "cosine" (decay over all steps), "plateau" (halve on a stalled monitor) or "none".
        monitor: the validation figure that picks the best epoch and drives early stopping.
        patience: epochs without improvement before stopping (0 = never stop early).
        seed: seeds weights, shuffling and augmentation.
        mixed_precision: "auto" (fastest on the device), "off", "float16" or "bfloat16".
        jit: XLA on/off; None = the device default.
        strategy: distribution strategy (see ``yolol_tf.training.distribute``); "auto" = one device.
        out: run folder; default ``saved_models/<model>-<name or time>``.
        name: run name used in the default run folder.
        steps_per_epoch: steps per epoch; default one pass over the training split.
        head_epochs: fine-tuning in two phases: this many epochs of the head alone (the backbone frozen, its
            BatchNormalization in inference mode) at ``learning_rate``, then the whole network at
            ``learning_rate * finetune_lr_scale`` for the remaining epochs. None: ``DEFAULT_HEAD_EPOCHS``
            when ``model_options`` names pretrained ``weights``, else 0 (one phase).
        finetune_lr_scale: the second phase's peak learning rate, as a fraction of ``learning_rate``.
        warmup_epochs: epochs (fractions allowed) over which the learning rate rises linearly from 0 to its
            peak, before the cosine decay (or the constant rate of schedule "none"). In two-phase fine-tuning
            it applies to the whole-network phase only: that phase starts a fresh optimizer on a pretrained
            backbone, where the first full-size steps do the harm; the short head phase trains a new head
            at full rate. Not with schedule "plateau" (its rate is a variable the warmup cannot own).
        ema_decay: weight averaging: the optimizer keeps an exponential moving average of the weights with
            this momentum (0 = off; 0.999 averages roughly the last 1000 steps). Training goes on with the
            raw weights; validation (val_loss, val_map), best.keras and last.keras use the average.
    """

    model: str = field(default_factory=_default_model)
    model_options: dict = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    loss: str = "bce"
    focal_gamma: float = 2.0
    asl_gamma_neg: float = 4.0
    asl_gamma_pos: float = 0.0
    asl_clip: float = 0.05
    label_smoothing: float = 0.0
    augment: float = 0.5
    mixup: float = 0.0
    cutmix: float = 0.0
    schedule: str = "cosine"
    monitor: str = "val_map"
    patience: int = 5
    seed: int = 0
    mixed_precision: str = "auto"
    jit: bool | None = None
    strategy: str = "auto"
    out: str | None = None
    name: str | None = None
    steps_per_epoch: int | None = None
    head_epochs: int | None = None
    finetune_lr_scale: float = 0.1
    warmup_epochs: float = 0.0
    ema_decay: float = 0.0


DEFAULT_HEAD_EPOCHS = 2


def head_epochs(config: TrainConfig) -> int:
    """Epochs of the head-only phase: ``config.head_epochs``, else 2 with pretrained weights, else 0; 0 too
    when ``freeze_backbone`` keeps the backbone frozen throughout (one phase: linear probing)."""
    if config.head_epochs is not None:
        return config.head_epochs
    from yolol_tf.models.finetune import frozen_throughout

    options = config.model_options if isinstance(config.model_options, dict) else {}
    if frozen_throughout(options):
        return 0
    return DEFAULT_HEAD_EPOCHS if options.get("weights") and config.epochs > DEFAULT_HEAD_EPOCHS else 0


def load_config(
    path: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    resume: bool = False,
) -> TrainConfig:
    """The settings of a run: defaults, the model's own defaults (:func:`model_defaults`), then the YAML,
    then ``overrides`` (None values ignored).

    Resuming without a YAML takes the run folder's own ``config.yaml``, so a run continues with the
    settings it started with; overrides given now still win.

    Args:
        path: an experiments YAML (or a run's config.yaml), or None.
        overrides: settings by name, e.g. from CLI flags.
        resume: whether the run continues an unfinished one.
    """
    overrides = dict(overrides or {})
    if resume and path is None:
        run_dir = runs.run_dir_for(config_lib.resolve(TrainConfig, None, overrides), resume=True)
        if (run_dir / runs.CONFIG_FILE).is_file():
            path = run_dir / runs.CONFIG_FILE
            overrides["out"] = str(run_dir)
    config = config_lib.resolve(TrainConfig, path, overrides)
    defaults = model_defaults(config.model)
    return config_lib.resolve(TrainConfig, path, overrides, defaults) if defaults else config


def with_model_options(config: TrainConfig, **options: Any) -> TrainConfig:
    """``config`` with ``options`` merged into its ``model_options`` (None values ignored), e.g. ``weights``
    from the command line beside a YAML's other model options."""
    given = {k: v for k, v in options.items() if v is not None}
    if not isinstance(config.model_options, dict):
        return config  # validate() names it
    return dataclasses.replace(config, model_options={**config.model_options, **given}) if given else config


def pin_model_options(config: TrainConfig, recorded: dict[str, Any] | None) -> TrainConfig:
    """``config`` with each of its model's ``former_options`` (:class:`~yolol_tf.models.spec.ModelSpec`)
    written out in ``model_options``, so that config.yaml says which network the run builds.

    A value given in ``config`` stays. Otherwise a new run gets the builder's default, and a resumed run what
    its config.yaml recorded, or, recorded before the option existed, the option's former value: a run goes
    on with the network it started with, whatever the defaults became since.

    Args:
        config: the run's settings.
        recorded: when resuming, the ``model_options`` of the run folder's config.yaml for this model
            ({} if it has none); None for a new run.
    """
    from yolol_tf.models import MODEL_NAMES, get_spec, pinned_defaults

    if config.model not in MODEL_NAMES or not isinstance(config.model_options, dict):
        return config  # validate() names it
    former = get_spec(config.model).former_options
    missing = [name for name in former if name not in config.model_options]
    if not missing:
        return config
    defaults = pinned_defaults(config.model)
    pinned = {
        name: defaults[name] if recorded is None else recorded.get(name, former[name]) for name in missing
    }
    return dataclasses.replace(config, model_options={**config.model_options, **pinned})


def recorded_model_options(run_dir: Path, model: str) -> dict[str, Any] | None:
    """The ``model_options`` a run folder's config.yaml recorded for ``model``; None without one (or for
    another model)."""
    path = run_dir / runs.CONFIG_FILE
    if not path.is_file():
        return None
    recorded = config_lib.read_yaml(path)  # a mapping, or a UserError naming the file
    if recorded.get("model") != model:
        return None
    options = recorded.get("model_options")
    return dict(options) if isinstance(options, dict) else {}


def model_defaults(model: str) -> dict[str, Any]:
    """The training settings a model's measurements chose (``ModelSpec.train_defaults``); {} if unknown."""
    from yolol_tf.models import MODEL_NAMES, get_spec

    return dict(get_spec(model).train_defaults) if model in MODEL_NAMES else {}


def validate(config: TrainConfig) -> None:
    """Rejects settings that cannot work, naming the setting and its value."""
    from yolol_tf.models import MODEL_NAMES

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise UserError(message)

    need(
        config.model in MODEL_NAMES,
        f"Unknown model {config.model!r}. Choose one of: {', '.join(MODEL_NAMES)}",
    )
    for key in ("data", "val"):
        path = getattr(config, key)
        need(
            path is None or Path(path).expanduser().exists(),
            f"--{key} {path}: no such file or folder",
        )
    need(
        isinstance(config.model_options, dict),
        f"model_options must be a mapping. Received: {config.model_options!r}",
    )
    need(config.loss in LOSSES, f"Unknown loss {config.loss!r}. Choose one of: {', '.join(LOSSES)}")
    need(
        config.schedule in SCHEDULES,
        f"schedule must be one of {', '.join(SCHEDULES)}. Received: schedule={config.schedule!r}",
    )
    need(
        config.optimizer in OPTIMIZERS,
        f"optimizer must be one of {', '.join(OPTIMIZERS)}. Received: optimizer={config.optimizer!r}",
    )
    need(config.epochs >= 1, f"epochs must be >= 1. Received: epochs={config.epochs}")
    need(config.batch_size >= 1, f"batch_size must be >= 1. Received: batch_size={config.batch_size}")
    config.check()
    need(
        config.learning_rate > 0, f"learning_rate must be > 0. Received: learning_rate={config.learning_rate}"
    )
    need(0.0 <= config.augment <= 1.0, f"augment must be in [0, 1]. Received: augment={config.augment}")
    for key in ("mixup", "cutmix"):
        value = getattr(config, key)
        need(0.0 <= value <= 1.0, f"{key} must be a probability in [0, 1]. Received: {key}={value!r}")
    need(
        config.steps_per_epoch is None or config.steps_per_epoch >= 1,
        f"steps_per_epoch must be >= 1. Received: steps_per_epoch={config.steps_per_epoch}",
    )
    need(
        config.head_epochs is None or 0 <= config.head_epochs < config.epochs,
        f"head_epochs must be in 0..epochs-1 (the whole network needs at least one epoch). "
        f"Received: head_epochs={config.head_epochs}, epochs={config.epochs}",
    )
    need(
        0 < config.finetune_lr_scale <= 1,
        f"finetune_lr_scale must be in (0, 1]. Received: finetune_lr_scale={config.finetune_lr_scale}",
    )
    whole = config.epochs - head_epochs(config)  # the warmup belongs to the whole-network phase
    need(
        0 <= config.warmup_epochs < whole,
        f"warmup_epochs must be >= 0 and less than the epochs that train the whole network ({whole}). "
        f"Received: warmup_epochs={config.warmup_epochs}",
    )
    need(
        not (config.warmup_epochs and config.schedule == "plateau"),
        f"warmup_epochs needs schedule cosine or none: plateau halves a fixed rate that a warmup cannot "
        f"also set. Received: warmup_epochs={config.warmup_epochs}, schedule={config.schedule!r}",
    )
    need(
        0 <= config.ema_decay < 1,
        f"ema_decay must be in [0, 1) (0 = no weight averaging). Received: ema_decay={config.ema_decay}",
    )


def steps_per_epoch(config: Any, info: Any) -> int:
    """Steps in one epoch: ``config.steps_per_epoch``, else one pass over the training split.

    Args:
        config: a ``TrainConfig`` (or anything with ``steps_per_epoch`` and ``batch_size``).
        info: the data's ``DatasetInfo``.
    """
    return config.steps_per_epoch or max(1, math.ceil(info.counts.get("train", 1) / config.batch_size))


def effective_loss(config: TrainConfig, info: Any) -> str:
    """The loss actually used: the default "bce" becomes "cce" (softmax) on single-label data."""
    return "cce" if info.single_label and config.loss == "bce" else config.loss


def activation_of(loss: str) -> str:
    """The output activation that matches a loss: "softmax" for "cce", else "sigmoid"."""
    return "softmax" if loss == "cce" else "sigmoid"


def for_data(config: TrainConfig, info: Any) -> TrainConfig:
    """The config as the opened data makes it, as config.yaml records it: the data's real size, the loss
    single-label data needs, and absolute data paths (so evaluate and export find the data from any
    folder)."""

    def absolute(path: str | None) -> str | None:
        return None if path is None else str(Path(path).expanduser().absolute())

    return dataclasses.replace(
        config,
        data=absolute(config.data),
        val=absolute(config.val),
        size=int(info.image_shape[0]),
        loss=effective_loss(config, info),
    )
