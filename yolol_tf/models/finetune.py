"""The backbone of a model built here, and freezing it for the two phases of fine-tuning.

Every convolutional model here ends in ``avg_pool`` (global average pooling), then optional dropout and the
``logits``: the backbone is every layer with weights before the pooled features, the head what follows.
Fine-tuning pretrained weights usually runs in two phases::

    set_backbone_trainable(model, False)   # 1. the head alone, at the usual learning rate
    ...compile, fit...
    set_backbone_trainable(model, True)    # 2. everything but BN, at a lower learning rate
    ...compile again (a new optimizer: the trainable weights changed), fit...

A frozen BatchNormalization layer (ours or Keras') runs in inference mode: it normalises with its moving
statistics and does not update them, which is what small fine-tuning batches need. Phase 2 keeps BN layers
frozen unless asked otherwise.

The model option ``freeze_backbone: true`` (lite0, resnet50) means linear probing: the backbone stays
frozen for the whole run, which is then one phase; ``TrainConfig.head_epochs`` (the two-phase default
with pretrained weights) belongs to ``freeze_backbone: false`` and is refused beside it
(:func:`check_head_epochs`, :func:`frozen_throughout`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from yolol_tf.errors import UserError

if TYPE_CHECKING:
    import keras

# The layer that turns the backbone's feature map into the pooled features the head reads.
POOL = "avg_pool"


def backbone_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers with weights before the pooled features (stem, stages and, in EfficientNet-Lite0, the top convolution)."""
    names = [layer.name for layer in model.layers]
    if POOL not in names:
        raise UserError(f"{model.name}: no {POOL!r} layer, so no backbone to freeze or unfreeze")
    return [layer for layer in model.layers[: names.index(POOL)] if layer.weights]


def set_backbone_trainable(model: keras.Model, trainable: bool, *, batch_norm: bool = False) -> None:
    """Freezes or unfreezes the backbone; the head (dropout, logits) stays trainable.

    Args:
        model: a model of this package with an ``avg_pool`` layer (every convolutional one).
        trainable: False for the head-only phase, True to fine-tune the whole network.
        batch_norm: when unfreezing, unfreeze the BN layers too (batch statistics in training, moving
            averages updated); by default they stay frozen, in inference mode.
    """
    import keras

    from yolol_tf.models.layers import BatchNormalization

    for layer in backbone_layers(model):
        is_norm = isinstance(layer, (BatchNormalization, keras.layers.BatchNormalization))
        layer.trainable = bool(trainable) and (batch_norm or not is_norm)


def frozen_throughout(model_options: Mapping[str, Any]) -> bool:
    """Whether the backbone stays frozen for the whole run (``freeze_backbone: true``: linear probing)."""
    return bool(model_options.get("freeze_backbone", False))


def check_head_epochs(model_options: Mapping[str, Any], head_epochs: int | None) -> None:
    """Refuses a head phase beside ``freeze_backbone: true``, which has no later phase to unfreeze into.

    Args:
        model_options: the run's model options.
        head_epochs: ``TrainConfig.head_epochs`` as given (None: the default, which a frozen backbone
            turns into one phase).

    Raises:
        UserError: ``freeze_backbone`` is true and ``head_epochs`` is set above 0.
    """
    if frozen_throughout(model_options) and head_epochs:
        raise UserError(
            "freeze_backbone: true keeps the backbone frozen for the whole run (linear probing), so there is "
            f"no second phase after head_epochs. Received: head_epochs={head_epochs}. Leave head_epochs out "
            "(or 0), or set freeze_backbone: false to train the head alone first and then the whole network"
        )
