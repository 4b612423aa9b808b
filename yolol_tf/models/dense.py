"""The seeds' fully connected network: flatten, a stack of ReLU layers, one logit per class."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from yolol_tf.errors import UserError
from yolol_tf.models.spec import ModelSpec, Param, dropout_option, dropout_param, flag_options, flag_param

if TYPE_CHECKING:
    import keras

# The seeds' hidden layers, first to last; the search scales them and keeps the narrowest `depth`.
DENSE_WIDTHS = (2048, 1024, 512, 256, 128)


def build_dense(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    widths: Sequence[int] = DENSE_WIDTHS,
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
    import keras

    from yolol_tf.models.layers import BatchNormalization

    inputs = keras.Input(shape=tuple(input_shape), name="pixels")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    for index, width in enumerate(widths, start=1):
        block = f"dense{index}"
        # A bias before batch normalisation is cancelled by its mean subtraction.
        x = keras.layers.Dense(int(width), use_bias=not batch_norm, name=f"{block}_dense")(x)
        if batch_norm:
            # Momentum 0.9: the moving statistics settle within the first epochs of a small dataset.
            x = BatchNormalization(momentum=0.9, name=f"{block}_bn")(x)
        x = keras.layers.Activation("relu", name=f"{block}_relu")(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"{block}_dropout")(x)
    outputs = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def search_options(values: Mapping[str, Any]) -> dict[str, Any]:
    """Builder options of sampled values: ``width_scale`` and ``depth`` pick the widths."""
    depth = int(values.get("depth", len(DENSE_WIDTHS)))
    scale = float(values.get("width_scale", 1.0))
    widths = [max(4, int(round(w * scale))) for w in DENSE_WIDTHS[-depth:]]
    return {**dropout_option(values), "widths": widths, **flag_options(values, "batch_norm")}


SPEC = ModelSpec(
    name="dense",
    build=build_dense,
    space=(
        Param(
            "width_scale",
            "choice",
            values=(0.125, 0.25, 0.5, 1.0),
            limits=(0.01, 8.0),
            help=f"scales the widths {DENSE_WIDTHS[0]}..{DENSE_WIDTHS[-1]}",
        ),
        Param(
            "depth",
            "int",
            2,
            len(DENSE_WIDTHS),
            limits=(1, len(DENSE_WIDTHS)),
            help="hidden layers (the narrowest)",
        ),
        dropout_param(),
        flag_param("batch_norm", "batch norm after each layer"),
    ),  # fmt: skip
    options=search_options,
    learning_rates=(1e-4, 1e-2),
    batch_sizes=(32, 64, 128),
    summary=f"the seeds' network: Dense {'-'.join(str(w) for w in DENSE_WIDTHS)} on flattened pixels",
)
