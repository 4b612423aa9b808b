"""The settings of one search (:class:`TuneConfig`) and the checks they must pass before anything runs.

Pure Python: the CLI builds a ``TuneConfig`` without loading TensorFlow or keras-tuner.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolol_tf.data.settings import DataSettings
from yolol_tf.errors import UserError
from yolol_tf.models import QUICK_MODEL

TUNERS = ("random", "hyperband", "bayesian")
OBJECTIVES = ("val_map", "val_f1_macro")


@dataclass(frozen=True)
class TuneConfig(DataSettings):
    """Settings of one search; the data settings (``data``, ``val``, ``size``, ...) are those of
    :class:`~yolol_tf.data.settings.DataSettings`, as in ``TrainConfig``.

    Args:
        model: a name of ``yolol_tf.models.MODEL_NAMES``.
        tuner: "random", "hyperband" or "bayesian".
        max_trials: trials in all (a rerun with more runs only the new ones; caps Hyperband too).
        epochs: epochs per trial (Hyperband: the most any trial gets).
        objective: "val_map" or "val_f1_macro" (macro F1 at threshold 0.5), maximised.
        space: a YAML file narrowing or fixing parts of the search space.
        batch_size: fixes the batch size (else it is searched).
        steps_per_epoch: steps per epoch; default one pass over the training split.
        out: the search folder; default ``saved_models/tune-<model>-<time>``.
        overwrite: delete an earlier search in ``out`` and start afresh.
        train_best: after the search, train the best configuration in full into ``out/best``.
        train_epochs: epochs of that full training (default ``TrainConfig``'s).
        seed: seeds the oracle, weights and shuffling.
        chief: "HOST:PORT": run the oracle there and hand out trials to workers.
        worker: "HOST:PORT" of the chief: this process runs trials it hands out.
        worker_id: this worker's name (default hostname-pid); reuse it to resume a killed worker's trial.
        max_failures: stop after this many failed trials in a row.
        retries: reruns of a failed trial before it counts as FAILED.
        trials_per_process: run the trials in fresh child processes of at most this many trials each
            (needs ``data``, not an open ``source``). TensorFlow keeps some memory of every model a
            process trained, even after ``clear_session`` (tensorflow#61791); a new process starts clean.
        verbose: Keras fit verbosity.
        warmup_epochs: every trial's (and best.yaml's) ``warmup_epochs``; None: ``TrainConfig``'s default.
        ema_decay: every trial's (and best.yaml's) ``ema_decay``; None: ``TrainConfig``'s default.
    """

    model: str = QUICK_MODEL
    tuner: str = "random"
    max_trials: int = 10
    epochs: int = 3
    objective: str = "val_map"
    space: str | None = None
    batch_size: int | None = None
    steps_per_epoch: int | None = None
    out: str | None = None
    overwrite: bool = False
    train_best: bool = False
    train_epochs: int | None = None
    seed: int = 0
    chief: str | None = None
    worker: str | None = None
    worker_id: str | None = None
    max_failures: int = 3
    retries: int = 0
    trials_per_process: int | None = None
    verbose: int = 2
    warmup_epochs: float | None = None
    ema_decay: float | None = None


def validate(config: TuneConfig) -> None:
    """Rejects settings that cannot work, naming the flag and its value."""

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise UserError(message)

    need(config.tuner in TUNERS, f"--tuner must be one of {', '.join(TUNERS)}. Received: {config.tuner!r}")
    need(
        config.objective in OBJECTIVES,
        f"--objective must be one of {', '.join(OBJECTIVES)}. Received: {config.objective!r}",
    )
    need(config.max_trials >= 1, f"--max-trials must be >= 1. Received: {config.max_trials}")
    need(config.epochs >= 1, f"--epochs must be >= 1. Received: {config.epochs}")
    need(config.max_failures >= 1, f"max_failures must be >= 1. Received: {config.max_failures}")
    need(
        config.trials_per_process is None or config.trials_per_process >= 1,
        f"--trials-per-process must be >= 1. Received: {config.trials_per_process}",
    )
    need(
        not (config.worker and config.overwrite),
        "--overwrite is for the chief only: a worker would delete the shared search",
    )
    need(
        config.warmup_epochs is None or 0 <= config.warmup_epochs < config.epochs,
        f"--warmup-epochs must be >= 0 and less than --epochs ({config.epochs}). "
        f"Received: warmup_epochs={config.warmup_epochs}",
    )
    need(
        config.warmup_epochs is None or not config.train_best or config.train_epochs is None
        or config.warmup_epochs < config.train_epochs,
        f"--warmup-epochs must be less than --train-epochs ({config.train_epochs}), which the best "
        f"configuration trains. Received: warmup_epochs={config.warmup_epochs}",
    )  # fmt: skip
    need(
        config.ema_decay is None or 0 <= config.ema_decay < 1,
        f"--ema-decay must be in [0, 1) (0 = no weight averaging). Received: ema_decay={config.ema_decay}",
    )
    config.check()


def data_values(config: TuneConfig) -> dict[str, Any]:
    """The data settings of ``config`` that differ from their defaults, as ``TrainConfig`` settings.

    What ``best.yaml`` and each trial's ``TrainConfig`` get, and what search.yaml records: a setting left
    at its default (``size: None``, the data's own) stays out, so the training run resolves it the same way.
    """
    return {
        field.name: getattr(config, field.name)
        for field in dataclasses.fields(DataSettings)
        if getattr(config, field.name) != field.default
    }


def recipe_values(config: TuneConfig) -> dict[str, Any]:
    """The training recipe settings fixed for every trial (``warmup_epochs``, ``ema_decay``), where given."""
    names = ("warmup_epochs", "ema_decay")
    return {name: getattr(config, name) for name in names if getattr(config, name) is not None}


def search_dir(config: TuneConfig, role: str) -> Path:
    """The search folder: ``config.out``, else (one process only) ``saved_models/tune-<model>-<time>``."""
    if config.out:
        return Path(config.out)
    if role != "single":
        raise UserError("--chief and --worker need --out: the search folder every process shares")
    return Path("saved_models") / f"tune-{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"
