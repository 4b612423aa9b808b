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
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
