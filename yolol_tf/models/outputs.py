"""From a model's logits to probabilities: the one place the output activation is applied.

Every yolol-tf model outputs one logit per class; ``sigmoid`` (multi-label) or ``softmax`` (single-label,
e.g. Sign-MNIST) turns them into probabilities in float64 numpy. :func:`predict_probs` runs a model over
a ``tf.data`` split for training's validation mAP, evaluation and export checks alike.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from yolol_tf.errors import UserError

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

ACTIVATIONS = ("sigmoid", "softmax")
# One inference function per model, so repeated calls (MAPCallback, every epoch) trace it once.
_INFERENCE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, exact for large |x| (neither overflowing exp nor losing tiny probabilities)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def activate(logits: np.ndarray, activation: str) -> np.ndarray:
    """Probabilities (float64) from logits.

    Args:
        logits: ``[N, C]`` model outputs.
        activation: "sigmoid" (multi-label) or "softmax" (single-label).
    """
    if activation not in ACTIVATIONS:
        raise UserError(f"activation must be 'sigmoid' or 'softmax'. Received: activation={activation!r}")
    return softmax(logits) if activation == "softmax" else sigmoid(logits)


def predict_probs(
    model: keras.Model, dataset: tf.data.Dataset, activation: str = "sigmoid"
) -> tuple[np.ndarray, np.ndarray]:
    """Runs the model over a dataset of (images, labels) and returns truth and probabilities.

    Args:
        model: a model that outputs one logit per class (as every yolol-tf builder does).
        dataset: batches of (uint8 or float images, multi-hot labels), e.g. ``DataSource.dataset("test", 64)``.
        activation: "sigmoid" (multi-label) or "softmax" (single-label), applied to the logits in float64.

    Returns:
        (y_true float32 [N, C], y_prob float64 [N, C]).
    """
    if activation not in ACTIVATIONS:
        raise UserError(f"activation must be 'sigmoid' or 'softmax'. Received: activation={activation!r}")
    y_true, logits = predict_logits(model, dataset)
    return y_true, (activate(logits, activation) if len(logits) else logits)


def predict_logits(model: keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Runs the model over a dataset of (images, labels): (y_true float32 [N, C], logits float64 [N, C]),
    one row per sample under any distribution strategy; two empty arrays for an empty dataset."""
    forward = _inference_function(model)
    truths, logits = [], []
    for images, labels in dataset:
        logits.append(np.asarray(forward(images), dtype=np.float64))
        truths.append(np.asarray(labels, dtype=np.float32))
    if not logits:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float64)
    return np.concatenate(truths), np.concatenate(logits)


def _inference_function(model: keras.Model) -> Any:
    """``model(images, training=False)`` as a ``tf.function``, traced once per model and then reused.

    Not ``predict_on_batch``: under a strategy with several replicas (MirroredStrategy on several GPUs,
    MultiWorkerMirroredStrategy) it runs the whole batch on every replica and returns each row once per
    replica. Called outside ``strategy.run``, the model reads its local copy of the weights instead.
    """
    forward = _INFERENCE.get(model)
    if forward is None:
        import tensorflow as tf

        # A weak reference: the cache must not keep a model alive (the tuner builds one per trial).
        model_ref = weakref.ref(model)

        def call(images: tf.Tensor) -> tf.Tensor:
            # The models take float pixels 0..255; stores hold uint8.
            return model_ref()(tf.cast(images, tf.float32), training=False)

        forward = _INFERENCE[model] = tf.function(call, reduce_retracing=True)
    return forward
