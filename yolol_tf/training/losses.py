"""Training losses on logits: binary cross-entropy (plain or class-weighted), focal, asymmetric, categorical.

Every loss takes the model's raw logits (models never apply sigmoid/softmax) and multi-hot (or one-hot)
float targets. The custom ones are registered serializable so a compiled model saves and reloads.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from yolol_tf.errors import UserError
from yolol_tf.training.config import LOSSES

# A class seen once in 10,000 crops would otherwise get a weight of 10,000 and dominate every batch.
MAX_POS_WEIGHT = 100.0


def _smooth(y_true: Any, label_smoothing: float) -> Any:
    y_true = ops.cast(y_true, "float32")
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    return y_true


@keras.saving.register_keras_serializable(package="yolol_tf")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy on logits with a per-class weight on the positive term.

    ``pos_weight[c] = negatives[c] / positives[c]`` on the training labels makes a rare class's few
    positives count as much as its many negatives (``tf.nn.weighted_cross_entropy_with_logits``).

    Args:
        pos_weight: one weight per class.
        label_smoothing: pulls targets towards 0.5 by this amount.
    """

    def __init__(
        self, pos_weight: list[float], label_smoothing: float = 0.0, name: str = "weighted_bce", **kwargs
    ):
        super().__init__(name=name, **kwargs)
        self.pos_weight = [float(w) for w in pos_weight]
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_true = _smooth(y_true, self.label_smoothing)
        logits = ops.cast(y_pred, "float32")
        w = ops.convert_to_tensor(self.pos_weight, dtype="float32")
        # -(w*y*log(p) + (1-y)*log(1-p)), with log(p) = log_sigmoid(x), log(1-p) = log_sigmoid(-x)
        loss = -(w * y_true * ops.log_sigmoid(logits) + (1.0 - y_true) * ops.log_sigmoid(-logits))
        return ops.mean(loss, axis=-1)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "pos_weight": self.pos_weight,
            "label_smoothing": self.label_smoothing,
        }


@keras.saving.register_keras_serializable(package="yolol_tf")
class AsymmetricLoss(keras.losses.Loss):
    """Asymmetric loss for multi-label classification (Ridnik et al., ICCV 2021), on logits.

    ``L = -y (1-p)^gamma_pos log(p) - (1-y) p_m^gamma_neg log(1-p_m)`` with the shifted probability
    ``p_m = max(p - clip, 0)``: easy negatives (the many absent classes of each crop) are down-weighted
    and those below ``clip`` discarded, so the few positives drive learning. Averaged over classes like
    Keras' binary cross-entropy: with ``gamma_neg = gamma_pos = clip = 0`` it equals BCE.

    Args:
        gamma_neg: focusing exponent on negatives.
        gamma_pos: focusing exponent on positives.
        clip: probability margin subtracted from negatives.
        label_smoothing: pulls targets towards 0.5 by this amount.
    """

    def __init__(
        self,
        gamma_neg: float = 4.0,
        gamma_pos: float = 0.0,
        clip: float = 0.05,
        label_smoothing: float = 0.0,
        name: str = "asl",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.gamma_neg = float(gamma_neg)
        self.gamma_pos = float(gamma_pos)
        self.clip = float(clip)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_true = _smooth(y_true, self.label_smoothing)
        logits = ops.cast(y_pred, "float32")
        p = ops.sigmoid(logits)
        log_p = ops.log_sigmoid(logits)
        if self.clip > 0:
            p_neg = ops.maximum(p - self.clip, 0.0)
            # 1 - p_m >= clip here, so the log is finite without the log_sigmoid trick.
            log_not_p = ops.log(ops.minimum(1.0 - p + self.clip, 1.0))
        else:
            p_neg = p
            log_not_p = ops.log_sigmoid(-logits)
        pos = y_true * log_p
        neg = (1.0 - y_true) * log_not_p
        if self.gamma_pos:
            pos = pos * ops.power(1.0 - p, self.gamma_pos)
        if self.gamma_neg:
            neg = neg * ops.power(p_neg, self.gamma_neg)
        return -ops.mean(pos + neg, axis=-1)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "gamma_neg": self.gamma_neg,
            "gamma_pos": self.gamma_pos,
            "clip": self.clip,
            "label_smoothing": self.label_smoothing,
        }


def pos_weights(class_freq: Any) -> list[float]:
    """Per-class ``negatives / positives`` from the positive frequency of each class in training labels.

    Args:
        class_freq: per-class fraction of training samples that contain the class, in [0, 1]. A class
            with no positives gets weight 1 (there is nothing to up-weight).
    """
    f = np.asarray(class_freq, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(f > 0, (1.0 - f) / f, 1.0)
    return [float(x) for x in np.clip(w, 1.0 / MAX_POS_WEIGHT, MAX_POS_WEIGHT)]


def get_loss(
    name: Any,
    *,
    class_freq: Any = None,
    focal_gamma: float = 2.0,
    asl_gamma_neg: float = 4.0,
    asl_gamma_pos: float = 0.0,
    asl_clip: float = 0.05,
    label_smoothing: float = 0.0,
) -> keras.losses.Loss:
    """The training loss called ``name``, on logits.

    Args:
        name: "bce", "weighted_bce", "focal", "asl" or "cce"; or a ``TrainConfig``, whose ``loss`` and loss
            settings are used (keyword arguments are then ignored).
        class_freq: per-class positive frequency in the training split; required by "weighted_bce".
        focal_gamma: focusing exponent of the focal loss.
        asl_gamma_neg: asymmetric loss exponent on negatives.
        asl_gamma_pos: asymmetric loss exponent on positives.
        asl_clip: asymmetric loss probability margin on negatives.
        label_smoothing: pulls targets towards 0.5 (binary) or uniform (categorical) by this amount.
    """
    if not isinstance(name, str):
        config = name
        name = config.loss
        focal_gamma, label_smoothing = config.focal_gamma, config.label_smoothing
        asl_gamma_neg, asl_gamma_pos, asl_clip = config.asl_gamma_neg, config.asl_gamma_pos, config.asl_clip
    if not 0.0 <= label_smoothing < 1.0:
        raise UserError(f"label_smoothing must be in [0, 1). Received: label_smoothing={label_smoothing}")
    if name == "bce":
        return keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=label_smoothing, name="bce")
    if name == "weighted_bce":
        if class_freq is None:
            raise ValueError("weighted_bce needs class_freq, the per-class positive frequency")
        return WeightedBinaryCrossentropy(pos_weights(class_freq), label_smoothing=label_smoothing)
    if name == "focal":
        return keras.losses.BinaryFocalCrossentropy(
            gamma=focal_gamma, from_logits=True, label_smoothing=label_smoothing, name="focal"
        )
    if name == "asl":
        if not 0.0 <= asl_clip < 1.0:
            raise UserError(f"asl_clip must be in [0, 1). Received: asl_clip={asl_clip}")
        return AsymmetricLoss(asl_gamma_neg, asl_gamma_pos, asl_clip, label_smoothing=label_smoothing)
    if name == "cce":
        return keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=label_smoothing, name="cce"
        )
    raise UserError(f"Unknown loss {name!r}. Choose one of: {', '.join(LOSSES)}")
