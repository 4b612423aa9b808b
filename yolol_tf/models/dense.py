"""The seeds' fully connected network: flatten, a stack of ReLU layers, one logit per class."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from yolol_tf.errors import UserError
from yolol_tf.models.layers import BatchNormalization


def build_dense(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    widths: Sequence[int] = (2048, 1024, 512, 256, 128),
    dropout: float = 0.0,
    batch_norm: bool = False,
    name: str = "dense",
) -> keras.Model:
    """Builds a multilayer perceptron on flattened pixels.

    Args:
        input_shape: image shape ``(height, width, channels)``; pixels 0..255.
        num_classes: number of logits.
        widths: units of each hidden layer, first to last.
        dropout: dropout rate after each hidden layer (0 for none).
        batch_norm: normalise each hidden layer (our BatchNormalization) before its ReLU.
        name: the model's name.

    Returns:
        An uncompiled functional model mapping raw pixels to float32 logits.
    """
    if not widths or any(int(w) < 1 for w in widths):
        raise UserError(f"dense: widths must be positive integers. Received: widths={list(widths)}")
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"dense: dropout must be in [0, 1). Received: dropout={dropout}")
    inputs = keras.Input(shape=tuple(input_shape), name="pixels")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    for index, width in enumerate(widths, start=1):
        block = f"dense{index}"
        # A bias before batch normalisation is cancelled by its mean subtraction.
        x = keras.layers.Dense(int(width), use_bias=not batch_norm, name=f"{block}_dense")(x)
        if batch_norm:
            x = BatchNormalization(momentum=0.9, name=f"{block}_bn")(x)  # settles fast, as in cnn.py
        x = keras.layers.Activation("relu", name=f"{block}_relu")(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"{block}_dropout")(x)
    outputs = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
