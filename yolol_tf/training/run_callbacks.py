"""The callbacks of one ``fit`` of a run, in the order their hooks must run, and the monitor they watch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from yolol_tf import runs
from yolol_tf.errors import UserError

if TYPE_CHECKING:
    from yolol_tf.training.loop import _Phase, _Run


def run_callbacks(
    run: _Run, val_ds: Any, activation: str, resume: bool, committed: int, extra: list, phase: _Phase
) -> list:
    """The callbacks of one phase of ``run``, in the order their hooks must run (the backup last)."""
    import keras

    from yolol_tf.training.callbacks import (
        BestCheckpoint,
        EMAWeights,
        FitDone,
        HeadDone,
        LastCheckpoint,
        MAPCallback,
        ResumableEarlyStopping,
        monitor_mode,
    )
    from yolol_tf.training.compile import training_metrics

    config, run_dir = run.config, run.run_dir
    history_csv = run_dir / runs.HISTORY_FILE
    best_value, best_epoch = runs.committed_best(run_dir, committed) if resume else (None, None)
    if resume and best_value is None:  # a run folder from before best.json
        best_value, best_epoch = runs.best_so_far(history_csv, config.monitor)
    mode = monitor_mode(config.monitor)
    # With ema_decay, the averaged weights go in before MAPCallback and come out just before the backup.
    ema = EMAWeights() if config.ema_decay else None
    # MAPCallback first, so every later callback (the caller's too) sees val_map in the logs.
    # Under Keras' fit it is the whole validation (one pass over the split); the multi-worker loop has its own.
    val_metrics = None if run.custom_loop else training_metrics(run.source.info)
    cbs: list = [*([ema] if ema else []), MAPCallback(val_ds, activation, val_metrics), *extra]
    cbs += [
        BestCheckpoint(run_dir / runs.BEST_MODEL, config.monitor, best_value, best_epoch),
        LastCheckpoint(run_dir / runs.LAST_MODEL),
    ]
    if config.schedule == "plateau":
        cbs.append(
            keras.callbacks.ReduceLROnPlateau(
                config.monitor, factor=0.5, mode=mode, patience=max(1, config.patience // 2), verbose=1
            )
        )
    if config.patience > 0:
        # Patience counts the epochs without improvement so far, in this phase only.
        wait = (
            max(0, min(committed - 1 - best_epoch, committed - phase.first)) if best_epoch is not None else 0
        )
        cbs.append(ResumableEarlyStopping(config.monitor, config.patience, mode, best_value, wait, verbose=1))
    return [
        *cbs,
        keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False, profile_batch=0),
        keras.callbacks.CSVLogger(str(history_csv), append=resume),
        # on_train_end before the backup's own: every epoch is trained, or the head phase is.
        FitDone(run_dir / runs.FIT_DONE) if phase.last else HeadDone(run_dir / runs.HEAD_MODEL),
        *([ema.swap_back] if ema else []),  # the backup holds the raw weights, as training goes on from them
        # Last, so a kill never leaves a backup of an epoch whose other records are missing. It is kept
        # at the end of training and removed by runs.finish once metrics.json marks the run finished.
        keras.callbacks.BackupAndRestore(str(phase.backup), double_checkpoint=True, delete_checkpoint=False),
    ]


def check_monitor(monitor: str, info: Any) -> None:
    """Names a monitor this run never logs before an epoch is spent finding out."""
    names = ["loss", *(["accuracy"] if info.single_label else ["pr_auc", "f1_micro", "f1_macro"])]
    allowed = [*names, *(f"val_{n}" for n in names), "val_map"]
    if monitor not in allowed:
        raise UserError(
            f"monitor={monitor!r} is not a figure this run logs. Choose one of: {', '.join(allowed)}"
        )
