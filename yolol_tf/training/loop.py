"""Training: data -> model -> fit with callbacks -> a run folder (see :mod:`yolol_tf.runs`).

``train(TrainConfig(model="cnn"))`` is the whole of ``yolol-tf train cnn``: it opens the data (the embedded
demo dataset when ``data`` is None), builds and compiles the model on the fastest settings for the device,
fits with checkpointing, early stopping, a learning-rate schedule, TensorBoard and CSV logs and
``BackupAndRestore``, then tunes per-class thresholds on the validation split and writes labels, metrics
and plots. ``metrics.json`` is written last: it marks a run finished, and a finished run is never retrained.

On several machines (``strategy="multi-worker"``, see :mod:`yolol_tf.training.distribute`) every worker runs the
same ``train`` with the same ``out`` on shared storage; only the chief writes the run folder, and each
worker reads its own shard files of the store where there are enough. A worker restarted by a cluster
manager with the same command resumes by itself: on a cluster, a run folder holding ``backup/`` means
"resume" without ``--resume``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolol_tf import config as config_lib
from yolol_tf.errors import UserError

SCHEDULES = ("cosine", "plateau", "none")
OPTIMIZERS = ("adamw", "adam", "sgd", "rmsprop")
SAVED_MODELS = Path("saved_models")
FINISHED_MARKER = "metrics.json"
BACKUP_DIR = "backup"  # fault-tolerance state of an unfinished run


def __getattr__(attribute: str) -> Any:
    # PEP 562: `from yolol_tf.training.loop import MAPCallback` works without importing TensorFlow for everyone else.
    if attribute == "MAPCallback":
        from yolol_tf.training.callbacks import MAPCallback

        return MAPCallback
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (the keys of an ``experiments/*.yaml`` file; CLI flags override them).

    Args:
        model: "dense", "cnn" or "resnet50".
        model_options: keyword options of the model builder (e.g. ``{"small_input": True}``).
        data: a YOLO data.yaml or folder, a prepared store, or a Sign-MNIST CSV; None = the demo dataset.
        val: a Sign-MNIST test CSV, reported as "test" (never used for model selection).
        size: crop side in pixels of a YOLO dataset; a store or CSV keeps its own size, and a size other
            than the default that differs from it is an error (see :func:`resolve_size`). config.yaml
            records the size the data has.
        context: extra margin around each box, as a fraction of its size.
        min_visible: drop crops of boxes less visible than this after clipping.
        mode: "crop" (one sample per box) or "image" (one sample per image, labels = classes present).
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
    """

    model: str = "resnet50"
    model_options: dict = field(default_factory=dict)
    data: str | None = None
    val: str | None = None
    size: int = 64
    context: float = 0.0
    min_visible: float = 0.5
    mode: str = "crop"
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
    from yolol_tf.training.losses import LOSSES  # imports Keras: after the checks that need nothing

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
    need(config.size >= 8, f"size must be >= 8. Received: size={config.size}")
    need(
        config.learning_rate > 0, f"learning_rate must be > 0. Received: learning_rate={config.learning_rate}"
    )
    need(0.0 <= config.augment <= 1.0, f"augment must be in [0, 1]. Received: augment={config.augment}")
    need(
        config.steps_per_epoch is None or config.steps_per_epoch >= 1,
        f"steps_per_epoch must be >= 1. Received: steps_per_epoch={config.steps_per_epoch}",
    )


def run_dir_for(config: TrainConfig, *, resume: bool = False) -> Path:
    """The run folder: ``config.out``, else ``saved_models/<model>-<name>``, else (resuming) the newest
    unfinished run of this model, else ``saved_models/<model>-<YYYYmmdd-HHMMSS>``."""
    if config.out:
        return Path(config.out)
    if config.name:
        return SAVED_MODELS / f"{config.model}-{config.name}"
    if resume:
        unfinished = [
            d
            for d in SAVED_MODELS.glob(f"{config.model}-*")
            if d.is_dir() and not (d / FINISHED_MARKER).exists()
        ]
        if not unfinished:
            raise UserError(f"Nothing to resume: no unfinished {config.model} run in {SAVED_MODELS}/")
        return max(unfinished, key=lambda d: d.stat().st_mtime)
    return SAVED_MODELS / f"{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_run_dir(run_dir: Path, *, resume: bool) -> None:
    """Refuses to overwrite a finished run, or to restart an unfinished one without ``resume``."""
    if (run_dir / FINISHED_MARKER).exists():
        raise UserError(
            f"{run_dir} holds a finished run ({FINISHED_MARKER} exists); it is never retrained or "
            "overwritten. Pick another --name or --out."
        )
    exists = run_dir.is_dir() and any(run_dir.iterdir())
    if resume and not exists:
        raise UserError(f"Nothing to resume in {run_dir}: the folder is missing or empty")
    if not resume and exists:
        raise UserError(
            f"{run_dir} holds an unfinished run. Continue it with --resume, or pick another --name or --out."
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} is a file, not a folder")


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
        steps_per_epoch: steps per epoch, for the cosine schedule's length; default one pass over the
            training split.
        jit_compile: XLA on/off; None = ``config.jit``, else the device's default (see
            :mod:`yolol_tf.device`; never Keras' "auto", which picks XLA on CPU, where it is slower).

    Returns:
        The same model, compiled.
    """
    import keras

    from yolol_tf.training.callbacks import LogitF1Score
    from yolol_tf.training.losses import get_loss

    if jit_compile is None:
        from yolol_tf.device import choose, detect_device

        jit_compile = choose(detect_device(), config.mixed_precision, config.jit).jit
    loss_name = effective_loss(config, info)
    if loss_name == "cce" and not info.single_label:
        raise UserError(
            "loss 'cce' needs single-label data (one class per sample); use bce, weighted_bce, focal or asl"
        )
    if steps_per_epoch is None:
        steps_per_epoch = config.steps_per_epoch or max(
            1, math.ceil(info.counts.get("train", 1) / config.batch_size)
        )
    lr: Any = config.learning_rate
    if config.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, config.epochs * steps_per_epoch))
    optimizer = _optimizer(config, lr)

    if info.single_label:
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    else:
        metrics = [
            keras.metrics.AUC(
                curve="PR", multi_label=True, num_labels=info.num_classes, from_logits=True, name="pr_auc"
            ),
            LogitF1Score(average="micro", name="f1_micro"),
            LogitF1Score(average="macro", name="f1_macro"),
        ]
    loss = get_loss(
        loss_name,
        class_freq=class_freq,
        focal_gamma=config.focal_gamma,
        asl_gamma_neg=config.asl_gamma_neg,
        asl_gamma_pos=config.asl_gamma_pos,
        asl_clip=config.asl_clip,
        label_smoothing=config.label_smoothing,
    )
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile)
    return model


def effective_loss(config: TrainConfig, info: Any) -> str:
    """The loss actually used: the default "bce" becomes "cce" (softmax) on single-label data."""
    return "cce" if info.single_label and config.loss == "bce" else config.loss


def _optimizer(config: TrainConfig, lr: Any) -> Any:
    import keras

    if config.optimizer == "adamw":
        opt = keras.optimizers.AdamW(lr, weight_decay=config.weight_decay)
    elif config.optimizer == "adam":
        opt = keras.optimizers.Adam(lr)
    elif config.optimizer == "sgd":
        opt = keras.optimizers.SGD(lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay or None)
    else:
        opt = keras.optimizers.RMSprop(lr)
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
    import keras

    from yolol_tf import device
    from yolol_tf.data import open_data
    from yolol_tf.training import distribute

    # The strategy comes first: a multi-worker strategy must configure TensorFlow before anything runs.
    strategy = distribute.make_strategy(config.strategy, workers, task_index)
    custom_loop, chief = distribute.needs_custom_loop(strategy), distribute.is_chief(strategy)
    cluster = distribute.num_workers(strategy) > 1
    if cluster and not (config.out or config.name):
        raise UserError(
            "Training on several workers needs --out (or --name), the same on every worker, so that they "
            "share one run folder; put it on storage every worker reads"
        )
    run_dir = run_dir_for(config, resume=resume)
    resume = should_resume(run_dir, resume, strategy)
    if chief:  # other workers of a cluster see the chief's folder appear; only the chief writes it
        check_run_dir(run_dir, resume=resume)
    previous_policy = keras.mixed_precision.global_policy().name
    try:
        keras.utils.set_random_seed(config.seed)
        setup = device.setup(config.mixed_precision, config.jit)
        print(setup.describe())
        source = open_data(
            config.data,
            val=config.val,
            size=config.size,
            context=config.context,
            min_visible=config.min_visible,
            mode=config.mode,
        )
        info = source.info
        # Recorded as the data has it, so config.yaml (resume, evaluate) says what the model takes.
        config = resolve_size(config, info)
        if "val" not in source.splits or not info.counts.get("val"):
            raise UserError(
                f"{info.source}: no validation split; training needs one to select the best epoch"
            )
        config = dataclasses.replace(config, loss=effective_loss(config, info))
        if chief:
            if cluster:
                # Marks a started cluster run, so a restart even in the first epoch resumes (should_resume).
                (run_dir / BACKUP_DIR).mkdir(parents=True, exist_ok=True)
            run_dir.mkdir(parents=True, exist_ok=True)
            config_lib.write_yaml(run_dir / "config.yaml", config)
        run = _Run(config, source, run_dir, setup, strategy, custom_loop, chief)
        return _fit_and_report(run, resume, callbacks or [], verbose)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def resolve_size(config: TrainConfig, info: Any) -> TrainConfig:
    """The config with ``size`` set to the side of the data's images, or a UserError where they clash.

    A YOLO dataset is prepared at ``size``, but a prepared store or a Sign-MNIST CSV (28 px) keeps its
    own size. The rule: a size other than the default (64) was set by the user (flag or YAML), and
    one that differs from the data's is refused rather than silently ignored; the default gives way to
    the data's size. (An explicit 64 cannot be told from the default, so it gives way too.)

    Args:
        config: the run's settings.
        info: the opened data's ``DatasetInfo``.
    """
    actual = int(info.image_shape[0])
    default = TrainConfig.__dataclass_fields__["size"].default
    if config.size not in (actual, default):
        raise UserError(
            f"size {config.size} was asked for but the data {info.source} holds {actual}x{actual} images "
            f"(size {actual}). Leave out --size (or size: in the YAML) to train at {actual}, or prepare "
            f"the data again with --size {config.size}"
        )
    return dataclasses.replace(config, size=actual)


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
    return (run_dir / BACKUP_DIR).is_dir()


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


def _fit_and_report(run: _Run, resume: bool, extra_callbacks: list, verbose: int | str | None) -> Path:
    import keras
    import tensorflow as tf

    from yolol_tf import runs
    from yolol_tf.data.info import read_store_json
    from yolol_tf.models import build_model
    from yolol_tf.training import distribute
    from yolol_tf.training.callbacks import BestCheckpoint, LastCheckpoint, MAPCallback, monitor_mode

    config, source, run_dir = run.config, run.source, run.run_dir
    info = source.info
    activation = "softmax" if config.loss == "cce" else "sigmoid"
    steps = config.steps_per_epoch or max(1, math.ceil(info.counts["train"] / config.batch_size))
    train_ds = source.dataset(
        "train", config.batch_size, training=True, augment=config.augment, seed=config.seed, repeat=True
    )
    if run.custom_loop and source.store is not None:
        # Each worker reads only its own shard files where there are enough for every worker.
        shards = read_store_json(source.store)["splits"]["train"]["shards"]
        train_ds = distribute.shard_by_files(train_ds, run.strategy, len(shards))
    # A known length stops Keras from taking the end of the first validation pass for an early stop.
    val_batches = math.ceil(info.counts["val"] / config.batch_size)
    val_ds = source.dataset("val", config.batch_size).apply(
        tf.data.experimental.assert_cardinality(val_batches)
    )
    class_freq = class_frequency(source, info) if config.loss == "weighted_bce" else None

    _check_monitor(config.monitor, info)
    with run.strategy.scope():
        model = build_model(config.model, info.image_shape, info.num_classes, **config.model_options)
        compile_model(model, config, info, class_freq, steps_per_epoch=steps, jit_compile=run.setup.jit)

    history_csv = run_dir / "history.csv"
    best_value, best_epoch = _best_so_far(history_csv, config.monitor) if resume else (None, None)
    mode = monitor_mode(config.monitor)
    cbs: list = [MAPCallback(val_ds, activation), *extra_callbacks]
    best_cb = BestCheckpoint(run_dir / runs.BEST_MODEL, config.monitor, best_value, best_epoch)
    cbs += [best_cb, LastCheckpoint(run_dir / runs.LAST_MODEL)]
    if config.schedule == "plateau":
        cbs.append(
            keras.callbacks.ReduceLROnPlateau(
                config.monitor, factor=0.5, mode=mode, patience=max(1, config.patience // 2), verbose=1
            )
        )
    if config.patience > 0:
        cbs.append(
            keras.callbacks.EarlyStopping(config.monitor, patience=config.patience, mode=mode, verbose=1)
        )
    cbs += [
        keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False, profile_batch=0),
        keras.callbacks.CSVLogger(str(history_csv), append=resume),
        # Last, so a kill never leaves a backup of an epoch whose other records are missing.
        keras.callbacks.BackupAndRestore(str(run_dir / BACKUP_DIR), double_checkpoint=True),
    ]
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    if resume:
        print(f"Resuming {run_dir} from epoch {_backup_epoch(run_dir / BACKUP_DIR) + 1}")
    print(
        f"Training {config.model} on {info.source}: {info.counts.get('train', 0)} train / "
        f"{info.counts.get('val', 0)} val samples, {info.num_classes} classes; run folder {run_dir}"
    )
    start = time.perf_counter()
    fit_args = dict(
        epochs=config.epochs, steps_per_epoch=steps, validation_data=val_ds, callbacks=cbs, verbose=verbose
    )
    if run.custom_loop:
        distribute.custom_fit(model, train_ds, strategy=run.strategy, **fit_args)
    else:
        model.fit(train_ds, shuffle=False, **fit_args)  # the pipeline shuffles
    seconds = time.perf_counter() - start
    if not run.chief:
        return run_dir
    shutil.rmtree(run_dir / BACKUP_DIR, ignore_errors=True)
    _dedupe_history(history_csv)
    return _report(config, source, run_dir, activation, val_ds, best_cb, seconds, run.setup)


def _backup_epoch(backup: Path) -> int:
    """Epochs finished according to a backup folder (0 where there is none yet).

    Keras' ``BackupAndRestore`` keeps ``training_metadata.json``; the multi-worker loop's
    ``tf.train.CheckpointManager`` numbers its checkpoints by epochs finished (``ckpt-3``).
    """
    try:
        return int(json.loads((backup / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        found = re.search(r'^model_checkpoint_path: ".*-(\d+)"', (backup / "checkpoint").read_text(), re.M)
    except OSError:
        return 0
    return int(found.group(1)) if found else 0


def _check_monitor(monitor: str, info: Any) -> None:
    """Names a monitor this run never logs before an epoch is spent finding out."""
    names = ["loss", *(["accuracy"] if info.single_label else ["pr_auc", "f1_micro", "f1_macro"])]
    allowed = [*names, *(f"val_{n}" for n in names), "val_map"]
    if monitor not in allowed:
        raise UserError(
            f"monitor={monitor!r} is not a figure this run logs. Choose one of: {', '.join(allowed)}"
        )


def _best_so_far(history_csv: Path, monitor: str) -> tuple[float | None, int | None]:
    """The best monitored value and its epoch in a resumed run's history, so far."""
    import pandas as pd

    if not history_csv.is_file():
        return None, None
    try:
        df = pd.read_csv(history_csv)
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return None, None
    if monitor not in df or df[monitor].dropna().empty:
        return None, None
    column = df[monitor]
    i = column.idxmin() if monitor.endswith("loss") else column.idxmax()
    return float(column[i]), int(df["epoch"][i])


def _dedupe_history(history_csv: Path) -> None:
    """Keeps one row per epoch (the last): a kill between the CSV row and the backup repeats an epoch."""
    import pandas as pd

    if not history_csv.is_file():
        return
    df = pd.read_csv(history_csv)
    if "epoch" in df and df["epoch"].duplicated().any():
        df = df.drop_duplicates("epoch", keep="last").sort_values("epoch")
        config_lib.atomic_write_text(history_csv, df.to_csv(index=False))


def _report(
    config: TrainConfig,
    source: Any,
    run_dir: Path,
    activation: str,
    val_ds: Any,
    best_cb: Any,
    seconds: float,
    setup: Any,
) -> Path:
    import numpy as np

    from yolol_tf import metrics, plots, runs
    from yolol_tf.models import load_model
    from yolol_tf.training.callbacks import predict_probs

    info = source.info
    best_path = run_dir / runs.BEST_MODEL
    model = load_model(best_path if best_path.is_file() else run_dir / runs.LAST_MODEL)
    if not best_path.is_file():
        shutil.copyfile(run_dir / runs.LAST_MODEL, best_path)
    single = activation == "softmax"
    y_true, y_prob = predict_probs(model, val_ds, activation)
    thresholds = metrics.tune_thresholds(y_true, y_prob)
    runs.Labels(list(info.names), [float(t) for t in thresholds], activation, tuple(info.image_shape)).save(
        run_dir / runs.LABELS_FILE
    )
    results: dict[str, Any] = {
        "val": metrics.report(y_true, y_prob, thresholds, info.names, single_label=single)
    }
    if "test" in source.splits and info.counts.get("test"):
        test_true, test_prob = predict_probs(model, source.dataset("test", config.batch_size), activation)
        results["test"] = metrics.report(test_true, test_prob, thresholds, info.names, single_label=single)

    plots_dir = run_dir / "plots"
    plots.plot_history(run_dir / "history.csv", plots_dir)
    plots.plot_per_class_f1(results["val"]["per_class"], plots_dir / "per_class_f1.png")
    images, labels = next(iter(source.dataset("val", 16)))
    grid_prob = y_prob[: len(images)]
    plots.plot_prediction_grid(
        np.asarray(images),
        np.asarray(labels),
        grid_prob,
        thresholds,
        info.names,
        plots_dir / "val_predictions.png",
        single_label=single,
    )

    summary = {
        "model": config.model,
        "monitor": config.monitor,
        "best_epoch": None if best_cb.best_epoch is None else int(best_cb.best_epoch) + 1,
        "best_value": best_cb.best,
        "train_seconds": round(seconds, 1),
        "device": setup.describe(),
        **results,
    }
    config_lib.atomic_write_text(
        run_dir / FINISHED_MARKER, json.dumps(metrics.json_safe(summary), indent=2) + "\n"
    )
    print(_quality_line(results, run_dir))
    return run_dir


def _quality_line(results: dict, run_dir: Path) -> str:
    parts = []
    for split in ("val", "test"):
        if split in results:
            r = results[split]
            line = f"{split} mAP {r['map']:.3f}, macro F1 {r['f1_macro']:.3f}"
            if "accuracy" in r:
                line += f", accuracy {r['accuracy']:.3f}"
            parts.append(line)
    return f"Done: {'; '.join(parts)}. Run folder: {run_dir}"
