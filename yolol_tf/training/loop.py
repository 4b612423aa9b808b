"""Training: data -> model -> fit with callbacks -> a run folder (see :mod:`yolol_tf.runs`).

``train(TrainConfig(model=...))`` is the whole of ``yolol-tf train MODEL``: it opens the data (the
embedded demo dataset when ``data`` is None), builds and compiles the model on the fastest settings for
the device (:mod:`yolol_tf.training.compile`), fits with checkpointing, early stopping, a learning-rate
schedule, TensorBoard and CSV logs and ``BackupAndRestore``, then writes the report
(:mod:`yolol_tf.training.report`): thresholds, labels, metrics and plots. ``metrics.json`` is written
last: it marks a run finished, and a finished run is never retrained.

On several machines (``strategy="multi-worker"``, see :mod:`yolol_tf.training.distribute`) every worker
runs the same ``train`` with the same ``out`` on shared storage; only the chief writes the run folder, and
each worker reads its own shard files of the store where there are enough. A worker restarted by a
cluster manager with the same command resumes by itself: on a cluster, a run folder holding ``backup/``
means "resume" without ``--resume``.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolol_tf import config as config_lib
from yolol_tf import runs
from yolol_tf.errors import UserError
from yolol_tf.locks import exclusive
from yolol_tf.models.finetune import check_head_epochs
from yolol_tf.training.config import (
    TrainConfig,
    activation_of,
    effective_loss,
    for_data,
    head_epochs,
    pin_model_options,
    recorded_model_options,
    steps_per_epoch,
    validate,
)
from yolol_tf.training.run_callbacks import check_monitor, run_callbacks


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    callbacks: list | None = None,
    verbose: int | str | None = None,
    workers: str | list[str] | None = None,
    task_index: int | None = None,
) -> Path:
    """Trains ``config.model`` and returns its run folder (see :mod:`yolol_tf.runs` for its files).

    Args:
        config: the run's settings.
        resume: continue the unfinished run in the run folder from its last finished epoch
            (after a crash or a kill); its ``backup/`` holds weights, optimizer state and epoch. On a
            cluster of several workers a run folder with a ``backup/`` is resumed without it.
        callbacks: extra Keras callbacks, run after the validation mAP is in the logs.
        verbose: Keras fit verbosity; default a progress bar on a terminal, one line per epoch otherwise.
        workers: "host:port" of every worker of a cluster, in task order (a list or one comma-separated
            string), written into ``TF_CONFIG`` (see :func:`yolol_tf.training.distribute.make_strategy`).
        task_index: this process's position in ``workers``.
    """
    validate(config)  # first: a bad setting is named at once, before TensorFlow loads
    check_head_epochs(config.model_options, config.head_epochs)
    import keras

    from yolol_tf import device
    from yolol_tf.data import open_data
    from yolol_tf.training import distribute

    device.check_devices_before_training()  # hides a GPU that disagrees with the CPU, before TF starts
    # The strategy comes first: a multi-worker strategy must configure TensorFlow before anything runs.
    strategy = distribute.make_strategy(config.strategy, workers, task_index)
    custom_loop, chief = distribute.needs_custom_loop(strategy), distribute.is_chief(strategy)
    cluster = distribute.num_workers(strategy) > 1
    if cluster and not (config.out or config.name):
        raise UserError(
            "Training on several workers needs --out (or --name), the same on every worker, so that they "
            "share one run folder; put it on storage every worker reads"
        )
    run_dir = runs.run_dir_for(config, resume=resume)
    resume = should_resume(run_dir, resume, strategy)
    # Options whose default changed since the run started keep the value it started with. A cluster's other
    # workers restart without --resume: the chief's backup folder says the run goes on.
    continuing = resume or (run_dir / runs.BACKUP_DIR).is_dir()
    config = pin_model_options(config, recorded_model_options(run_dir, config.model) if continuing else None)
    previous_policy = keras.mixed_precision.global_policy().name
    with contextlib.ExitStack() as stack:
        if chief:  # other workers of a cluster see the chief's folder appear; only the chief writes it
            # Held for the whole run: a second training into this folder is refused, not mixed in.
            stack.enter_context(exclusive(run_dir, what="training run"))
            runs.check_run_dir(run_dir, resume=resume)
        stack.callback(keras.mixed_precision.set_global_policy, previous_policy)
        keras.utils.set_random_seed(config.seed)
        source = open_data(config)
        info = source.info
        if "val" not in source.splits or not info.counts.get("val"):
            raise UserError(
                f"{info.source}: no validation split; training needs one to select the best epoch"
            )
        if custom_loop and config.ema_decay:
            raise UserError(
                f"ema_decay is not supported with strategy {config.strategy!r} (the multi-worker loop "
                f"has no weight averaging). Received: ema_decay={config.ema_decay}; use 0 there"
            )
        if config.mixup or config.cutmix:
            loss = effective_loss(config, info)
            if loss == "cce":
                raise UserError(
                    f"mixup and cutmix give samples two classes or none, which the single-label loss 'cce' "
                    f"cannot take. Received: mixup={config.mixup}, cutmix={config.cutmix} with loss {loss}"
                )
        # After the data: with "auto" on a CPU with bfloat16, the precision is probed on this very model
        # (not on a cluster: every worker must train at one precision, whatever its own timing says).
        workload = None if cluster else _workload(config, info)
        setup = device.setup(config.mixed_precision, config.jit, workload=workload)
        print(setup.describe(), file=sys.stderr)
        # Recorded as the data has it, so config.yaml (resume, evaluate) says what the model takes.
        config = for_data(config, info)
        if chief:
            if cluster:
                # Marks a started cluster run, so a restart even in the first epoch resumes (should_resume).
                (run_dir / runs.BACKUP_DIR).mkdir(parents=True, exist_ok=True)
            run_dir.mkdir(parents=True, exist_ok=True)
            config_lib.write_yaml(run_dir / runs.CONFIG_FILE, config)
        run = _Run(config, source, run_dir, setup, strategy, custom_loop, chief)
        return _fit(run, resume, callbacks or [], verbose)


def _workload(config: TrainConfig, info: Any) -> Any:
    """What the bfloat16 speed probe of :mod:`yolol_tf.doctor.bf16` times: this run's model and batch."""
    from yolol_tf.doctor.bf16 import Workload

    # Weights change no step time: leaving them out keeps the probe offline and one verdict per network.
    options = {k: v for k, v in config.model_options.items() if k != "weights"}
    return Workload(config.model, options, tuple(info.image_shape), info.num_classes, config.batch_size)


def should_resume(run_dir: Path, resume: bool, strategy: Any) -> bool:
    """Whether this run resumes: as asked, or on the chief of a cluster whose run folder holds a backup.

    A cluster manager (Kubernetes, Slurm) restarts a failed worker with the command it started with, so
    on a cluster the run folder's ``backup/`` is what says "resume". Other workers never check the folder
    (see :func:`check_run_dir`), and restore from the backup that the chief restores from.

    Args:
        run_dir: the run folder.
        resume: whether ``--resume`` was given.
        strategy: the strategy of this process.
    """
    from yolol_tf.training import distribute

    if resume or distribute.num_workers(strategy) == 1 or not distribute.is_chief(strategy):
        return resume
    return (run_dir / runs.BACKUP_DIR).is_dir()


@dataclass(frozen=True)
class _Run:
    """What the fit and report steps of one run share."""

    config: TrainConfig
    source: Any
    run_dir: Path
    setup: Any
    strategy: Any
    custom_loop: bool
    chief: bool


def _fit(run: _Run, resume: bool, extra_callbacks: list, verbose: int | str | None) -> Path:
    import tensorflow as tf

    from yolol_tf.training.report import write_report

    config, source, run_dir = run.config, run.source, run.run_dir
    info = source.info
    activation = activation_of(config.loss)
    # A known length stops Keras from taking the end of the first validation pass for an early stop.
    val_batches = math.ceil(info.counts["val"] / config.batch_size)
    val_ds = source.dataset("val", config.batch_size).apply(
        tf.data.experimental.assert_cardinality(val_batches)
    )
    check_monitor(config.monitor, info)
    if resume and (run_dir / runs.FIT_DONE).is_file():
        print(f"Resuming {run_dir}: every epoch is trained; writing the report", file=sys.stderr)
    else:
        _train_epochs(run, resume, val_ds, activation, extra_callbacks, verbose)
    if not run.chief:
        return run_dir
    runs.dedupe_history(run_dir / runs.HISTORY_FILE)
    seconds = json.loads((run_dir / runs.FIT_DONE).read_text(encoding="utf-8"))["train_seconds"]
    write_report(config, source, run_dir, activation, val_ds, runs.read_best(run_dir), seconds, run.setup)
    runs.finish(run_dir)  # only now: a kill before this point resumes into the report, not epoch 1
    return run_dir


@dataclass(frozen=True)
class _Phase:
    """One ``fit`` of a run: its epochs, whether the backbone trains, its learning rate and backup folder."""

    first: int
    end: int
    backbone: bool
    learning_rate: float
    backup: Path
    last: bool


def _phases(config: TrainConfig, run_dir: Path) -> list[_Phase]:
    """One phase, or the head alone then the whole network (see ``TrainConfig.head_epochs``).

    ``freeze_backbone: true`` is one phase with the backbone frozen as built (linear probing).
    """
    head = head_epochs(config)
    backup = run_dir / runs.BACKUP_DIR
    if not head:
        return [_Phase(0, config.epochs, True, config.learning_rate, backup, True)]
    return [
        _Phase(0, head, False, config.learning_rate, backup / runs.HEAD_BACKUP, False),
        _Phase(head, config.epochs, True, config.learning_rate * config.finetune_lr_scale, backup, True),
    ]


def _train_epochs(
    run: _Run, resume: bool, val_ds: Any, activation: str, extra_callbacks: list, verbose: int | str | None
) -> None:
    """Builds the model and fits it, phase by phase, continuing from the backup when resuming."""
    from yolol_tf.data.info import read_store_json
    from yolol_tf.models import build_model
    from yolol_tf.training import distribute
    from yolol_tf.training.compile import class_frequency

    config, source, run_dir = run.config, run.source, run.run_dir
    info = source.info
    # Several workers split the store by file, so each keeps the records a file-reading dataset.
    train_ds = source.dataset(
        "train", config.batch_size, training=True, augment=config.augment, seed=config.seed, repeat=True,
        mixup=config.mixup, cutmix=config.cutmix, memory=not run.custom_loop,
    )  # fmt: skip
    if run.custom_loop and source.store is not None:
        # Each worker reads only its own shard files where there are enough for every worker.
        shards = read_store_json(source.store)["splits"]["train"]["shards"]
        train_ds = distribute.shard_by_files(train_ds, run.strategy, len(shards))
    class_freq = class_frequency(source, info) if config.loss == "weighted_bce" else None
    with run.strategy.scope():
        model = build_model(config.model, info.image_shape, info.num_classes, **config.model_options)

    phases = _phases(config, run_dir)
    # Where a resumed run goes on: the last phase whose backup holds finished epochs.
    done = [runs.backup_epoch(phase.backup) if resume else 0 for phase in phases]
    start = max((i for i, n in enumerate(done) if n), default=0)
    if start == 0 and len(phases) > 1 and done[0] >= phases[0].end and (run_dir / runs.HEAD_MODEL).is_file():
        # The head phase finished (else its fit restores its last epoch, trains none, and writes head.keras)
        # and the whole network had not yet finished an epoch.
        start = 1
    committed = max(done[start], phases[start].first)
    if resume and run.chief:
        # Epochs after the last backup are trained again: forget their history rows and best checkpoint.
        runs.keep_committed_history(run_dir / runs.HISTORY_FILE, committed)
        runs.rollback_best(run_dir, committed)
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    if resume:
        print(f"Resuming {run_dir} from epoch {committed + 1}", file=sys.stderr)
    print(
        f"Training {config.model} on {info.source}: {info.counts.get('train', 0)} train / "
        f"{info.counts.get('val', 0)} val samples, {info.num_classes} classes; run folder {run_dir}",
        file=sys.stderr,
    )
    for number, phase in enumerate(phases[start:], start):
        if number == start > 0 and not done[start]:
            # Resumed between the phases: the whole network starts from the head phase's last epoch.
            model.load_weights(run_dir / runs.HEAD_MODEL)
        if number > start:
            committed = phase.first  # the model in memory goes straight on from the phase before
        _fit_phase(run, model, train_ds, val_ds, phase, len(phases), class_freq, activation, committed,
                   resume or number > 0, extra_callbacks, verbose)  # fmt: skip


def _fit_phase(
    run: _Run,
    model: Any,
    train_ds: Any,
    val_ds: Any,
    phase: _Phase,
    count: int,
    class_freq: Any,
    activation: str,
    committed: int,
    resume: bool,
    extra_callbacks: list,
    verbose: int | str,
) -> None:
    """Compiles ``model`` for one phase (a new optimizer: which weights train may change) and fits it."""
    import dataclasses

    from yolol_tf.training import distribute
    from yolol_tf.training.compile import compile_model

    config, info = run.config, run.source.info
    steps = steps_per_epoch(config, info)
    if count > 1:
        from yolol_tf.models.finetune import set_backbone_trainable

        # BatchNormalization trains again with the whole network, as it does in one-phase fine-tuning.
        set_backbone_trainable(model, phase.backbone, batch_norm=phase.backbone)
        what = "the whole network" if phase.backbone else "the head alone (backbone frozen)"
        print(
            f"Phase {2 if phase.backbone else 1} of 2: {what}, epochs {phase.first + 1}-{phase.end} at "
            f"learning rate {phase.learning_rate:g}",
            file=sys.stderr,
        )
    # Each phase has its own schedule over its own epochs; the warmup is the whole network's (see
    # TrainConfig.warmup_epochs).
    phase_config = dataclasses.replace(
        config,
        epochs=phase.end - phase.first,
        learning_rate=phase.learning_rate,
        warmup_epochs=config.warmup_epochs if phase.backbone else 0.0,
    )
    with run.strategy.scope():
        compile_model(model, phase_config, info, class_freq, steps_per_epoch=steps, jit_compile=run.setup.jit)
    cbs = run_callbacks(run, val_ds, activation, resume, committed, extra_callbacks, phase)
    # Keras' fit leaves validation to MAPCallback, which logs val_loss and the metrics from its own pass; the
    # multi-worker loop validates each worker's share itself.
    fit_args = dict(
        epochs=phase.end, initial_epoch=phase.first, steps_per_epoch=steps,
        validation_data=val_ds if run.custom_loop else None, callbacks=cbs, verbose=verbose,
    )  # fmt: skip
    if run.custom_loop:
        distribute.custom_fit(model, train_ds, strategy=run.strategy, **fit_args)
    else:
        model.fit(train_ds, shuffle=False, **fit_args)  # the pipeline shuffles
