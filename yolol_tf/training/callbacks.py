"""Keras callbacks of a training run: exact validation mAP, the best and last checkpoints, metrics on logits,
and the swap of averaged weights (``ema_decay``) in for validation and checkpoints.

Checkpoints are written through a temporary file and a rename, so a run killed while saving never leaves a
half-written ``best.keras`` or ``last.keras``; they hold the model without optimizer or compile settings,
so any tool loads them with :func:`yolol_tf.models.load_model` and no custom objects. (Plain
``keras.saving.load_model`` works only after ``import yolol_tf.models.layers``, which registers our
``BatchNormalization``; ``yolol_tf.models.load_model`` does that import first.)
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from yolol_tf import runs
from yolol_tf.config import atomic_write_text
from yolol_tf.errors import UserError


@keras.saving.register_keras_serializable(package="yolol_tf")
class LogitF1Score(keras.metrics.F1Score):
    """F1 score (micro or macro) of a model that outputs logits: sigmoid, then the threshold.

    Args:
        average: "micro" or "macro" (see ``keras.metrics.F1Score``).
        threshold: decision threshold on the sigmoid probability.
        name: the metric's name in logs.
    """

    def __init__(self, average: str = "macro", threshold: float = 0.5, name: str = "f1", **kwargs):
        super().__init__(average=average, threshold=threshold, name=name, **kwargs)

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        super().update_state(y_true, ops.sigmoid(ops.cast(y_pred, "float32")), sample_weight)


def predict_probs(
    model: keras.Model, dataset: tf.data.Dataset, activation: str
) -> tuple[np.ndarray, np.ndarray]:
    """Runs ``model`` over a (images, labels) dataset once: (labels, probabilities) as numpy arrays.

    :func:`yolol_tf.models.outputs.predict_probs` (one row per sample under any distribution strategy), but an
    empty split is an error here: training cannot select an epoch without validation samples.

    Args:
        model: outputs logits.
        dataset: batched, not shuffled.
        activation: "sigmoid" or "softmax", applied to the logits.
    """
    from yolol_tf.models import outputs

    y_true, logits = _predict_logits(model, dataset)
    return y_true, outputs.activate(logits, activation)


def _predict_logits(model: keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    from yolol_tf.models import outputs

    y_true, logits = outputs.predict_logits(model, dataset)
    if not len(logits):
        raise UserError("The validation split is empty; training needs a few validation samples")
    return y_true, logits


class MAPCallback(keras.callbacks.Callback):
    """Puts the exact validation mAP (mean over classes of average precision) into logs as ``val_map``.

    Keras' streaming PR-AUC is an approximation over fixed thresholds; model selection and the tuner use
    this exact figure instead. Place it first so later callbacks (checkpoint, early stopping, CSV and
    TensorBoard logs) see it.

    Given ``metrics``, it is the epoch's whole validation: from the same one pass over the split it also
    logs ``val_loss`` (the compiled loss, with the model's own losses, as Keras' ``evaluate`` computes it)
    and ``val_NAME`` for each metric, so ``fit`` runs without ``validation_data`` and the validation split
    goes through the model once per epoch instead of twice.

    Args:
        val_dataset: the validation split, batched, not shuffled.
        activation: "sigmoid" or "softmax".
        metrics: fresh Keras metrics on logits (not the compiled instances, which hold training figures);
            None: only ``val_map``.
    """

    def __init__(
        self, val_dataset: tf.data.Dataset, activation: str = "sigmoid", metrics: list | None = None
    ):
        super().__init__()
        self.val_dataset = val_dataset
        self.activation = activation
        self.metrics = metrics
        self._evaluate: Any = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        from yolol_tf.metrics import mean_average_precision
        from yolol_tf.models import outputs

        y_true, logits = _predict_logits(self.model, self.val_dataset)
        figures = {
            "val_map": float(mean_average_precision(y_true, outputs.activate(logits, self.activation)))
        }
        if self.metrics is not None:
            figures.update(self._figures(y_true, logits.astype(np.float32)))
        if logs is not None:
            logs.update(figures)

    def _figures(self, y_true: np.ndarray, logits: np.ndarray) -> dict[str, float]:
        """val_loss and each metric's figure over the whole split (sample-weighted means, as Keras')."""
        if self._evaluate is None:
            # One graph, traced once: eagerly, the multi-label PR-AUC alone takes longer than the forward pass.
            model, metrics = self.model, self.metrics

            def evaluate(y: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
                for metric in metrics:
                    metric.update_state(y, y_pred)
                return model.compute_loss(y=y, y_pred=y_pred, training=False)

            self._evaluate = tf.function(evaluate, reduce_retracing=True)
        for metric in self.metrics:
            metric.reset_state()
        loss = self._evaluate(tf.constant(y_true), tf.constant(logits))
        return {"val_loss": float(loss), **{f"val_{m.name}": float(m.result()) for m in self.metrics}}


def save_model_atomic(model: keras.Model, path: str | os.PathLike) -> None:
    """Saves ``model``'s layers and weights (no optimizer, no compile settings) through a rename.

    Args:
        model: a functional model.
        path: the ``.keras`` file to (over)write.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    # A fresh functional wrapper over the same layers is uncompiled, so the file carries no loss/metric
    # objects that a loader would need to import.
    keras.Model(model.inputs, model.outputs, name=model.name).save(tmp)
    os.replace(tmp, path)


def monitor_mode(monitor: str) -> str:
    """Mode "min" for losses, "max" for every other figure (map, f1, auc, accuracy)."""
    return "min" if monitor.endswith("loss") else "max"


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the model when the monitored figure improves, with its epoch and value in ``best.json``.

    The checkpoint it replaces is kept aside until the run finishes (see :func:`yolol_tf.runs.retire_best`),
    so a run killed before the better epoch is backed up gets its real best back when it resumes.

    Args:
        path: the ``.keras`` file (``RUN/best.keras``).
        monitor: a key of the epoch logs, e.g. "val_map".
        initial_best: the best value of earlier epochs of a resumed run, so a worse epoch after resuming
            does not replace the real best.
        initial_epoch: the epoch that ``initial_best`` came from.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        monitor: str,
        initial_best: float | None = None,
        initial_epoch: int | None = None,
    ):
        super().__init__()
        self.path = Path(path)
        self.monitor = monitor
        self.mode = monitor_mode(monitor)
        self.best = initial_best
        self.best_epoch = initial_epoch

    def _improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None or (isinstance(self.best, float) and math.isnan(self.best)):
            return True
        return value < self.best if self.mode == "min" else value > self.best

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        if self.monitor not in logs:
            raise UserError(
                f"monitor={self.monitor!r} is not a figure this run logs. Available: {', '.join(sorted(logs))}"
            )
        value = float(logs[self.monitor])
        if self._improved(value):
            self.best, self.best_epoch = value, epoch
            runs.retire_best(self.path.parent)
            save_model_atomic(self.model, self.path)
            runs.record_best(self.path.parent, epoch, value)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Early stopping whose patience continues across a resume instead of starting again.

    Args:
        monitor: a key of the epoch logs.
        patience: epochs without improvement before stopping.
        mode: "min" or "max".
        initial_best: the best value of the epochs before the resume (None: a fresh run).
        initial_wait: epochs since that best, already without improvement.
        **kwargs: the rest of ``keras.callbacks.EarlyStopping``'s arguments.
    """

    def __init__(
        self,
        monitor: str,
        patience: int,
        mode: str,
        initial_best: float | None = None,
        initial_wait: int = 0,
        **kwargs: Any,
    ):
        super().__init__(monitor, patience=patience, mode=mode, **kwargs)
        self.initial_best = initial_best
        self.initial_wait = initial_wait

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        if self.initial_best is not None:
            self.best, self.wait = self.initial_best, self.initial_wait


class FitDone(keras.callbacks.Callback):
    """Writes ``fit.json`` when training ends, before the backup callback's own end: every epoch is done.

    Args:
        path: the marker file (``RUN/fit.json``).
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.path = Path(path)
        self._start = time.perf_counter()

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_train_end(self, logs: dict | None = None) -> None:
        seconds = round(time.perf_counter() - self._start, 1)
        atomic_write_text(self.path, json.dumps({"train_seconds": seconds}) + "\n")


class LastCheckpoint(keras.callbacks.Callback):
    """Saves the model at the end of every epoch.

    Args:
        path: the ``.keras`` file.
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.path = Path(path)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        save_model_atomic(self.model, self.path)


class HeadDone(keras.callbacks.Callback):
    """Saves the model when the head-only phase of two-phase fine-tuning ends: the whole network starts there.

    Args:
        path: the ``.keras`` file (``RUN/head.keras``).
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.path = Path(path)

    def on_train_end(self, logs: dict | None = None) -> None:
        save_model_atomic(self.model, self.path)


class EMAWeights(keras.callbacks.Callback):
    """Puts the optimizer's moving average of the weights (``use_ema``) into the model for validation and for
    the callbacks of an epoch's end, and the raw weights back before the backup and the next steps.

    Place it before :class:`MAPCallback` and its :attr:`swap_back` just before ``BackupAndRestore``:
    val_loss, val_map, best.keras and last.keras then come from the average, training goes on from the raw
    weights, and the backup holds the raw weights in the model and the average in the optimizer, as they
    are between steps, so a resumed run continues exactly. (``keras.callbacks.SwapEMAWeights`` with
    ``swap_on_epoch`` swaps back only when the next epoch begins: its backup would hold them exchanged, and
    a resumed run, whose fresh callback does not know that, would train on the average.) At the end of
    ``fit`` Keras itself copies the average into the model (``finalize_variable_values``).
    """

    def __init__(self):
        super().__init__()
        self.averaged = False
        self.swap_back = _SwapBack(self)

    def put(self, averaged: bool) -> None:
        """Puts the average (True) or the raw weights (False) into the model."""
        if averaged == self.averaged:
            return
        optimizer = self.model.optimizer
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer's own
        # The same pairing keras.callbacks.SwapEMAWeights uses: each trained variable and its average.
        for variable, average in zip(
            optimizer._trainable_variables, optimizer._model_variables_moving_average, strict=True
        ):
            raw = ops.convert_to_numpy(variable)
            variable.assign(average)
            average.assign(raw)
        self.averaged = averaged

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.put(False)

    def on_test_begin(self, logs: dict | None = None) -> None:
        self.put(True)

    def on_test_end(self, logs: dict | None = None) -> None:
        self.put(False)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.put(True)


class _SwapBack(keras.callbacks.Callback):
    """The raw weights back into the model at the end of an epoch (see :class:`EMAWeights`)."""

    def __init__(self, owner: EMAWeights):
        super().__init__()
        self.owner = owner

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.owner.put(False)
