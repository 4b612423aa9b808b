"""ResNet-50 (He et al. 2016) from its blocks, with our BatchNormalization throughout.

The layout is that of ``keras.applications.ResNet50`` (v1: stride on the first 1x1 convolution, biased
convolutions, BN epsilon 1.001e-5), so the backbone has exactly its parameter count and takes its ImageNet
weights (``weights="imagenet"``, :mod:`yolol_tf.models.weights.imagenet_resnet50`); layers are named by stage
and block as in the paper's table 1 (``stage2_block1_conv1`` ... ``stage5_block3_bn3``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yolol_tf.errors import UserError
from yolol_tf.models.finetune import set_backbone_trainable
from yolol_tf.models.spec import ModelSpec, dropout_and_flags, dropout_param, flag_param
from yolol_tf.models.weights.imagenet_resnet50 import (
    CAFFE_MEAN_RGB,
    find_imagenet_file,
    load_imagenet_resnet50,
)
from yolol_tf.models.weights.keras3 import load_weights_by_name, saved_layer_config
from yolol_tf.models.weights.keras_legacy import is_legacy_file

if TYPE_CHECKING:
    import keras

    Norm = Callable[[str], keras.layers.Layer]

# "ours": yolol_tf's BatchNormalization; "keras": keras.layers.BatchNormalization (see norm_class).
NORMS = ("ours", "keras")
# (filters of the bottleneck, blocks) of stages 2..5, table 1 of the paper.
STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))


def apply_bottleneck(x, filters: int, stride: int, name: str, norm: Norm, projection: bool = False):
    """The 1x1-3x3-1x1 bottleneck block, with a projection shortcut where the shape changes.

    Args:
        x: input tensor.
        filters: channels of the two inner convolutions; the block outputs ``4 * filters``.
        stride: stride of the first 1x1 convolution and of the projection (2 halves the resolution).
        name: prefix of the block's layer names, e.g. ``stage3_block1``.
        norm: makes a normalisation layer given its name.
        projection: use a 1x1 convolution on the shortcut (the first block of each stage).

    Returns:
        The block's output tensor.
    """
    import keras

    shortcut = x
    if projection:
        shortcut = keras.layers.Conv2D(4 * filters, 1, strides=stride, name=f"{name}_shortcut_conv")(x)
        shortcut = norm(f"{name}_shortcut_bn")(shortcut)
    x = keras.layers.Conv2D(filters, 1, strides=stride, name=f"{name}_conv1")(x)
    x = norm(f"{name}_bn1")(x)
    x = keras.layers.Activation("relu", name=f"{name}_relu1")(x)
    x = keras.layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv2")(x)
    x = norm(f"{name}_bn2")(x)
    x = keras.layers.Activation("relu", name=f"{name}_relu2")(x)
    x = keras.layers.Conv2D(4 * filters, 1, name=f"{name}_conv3")(x)
    x = norm(f"{name}_bn3")(x)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.Activation("relu", name=f"{name}_out")(x)


def apply_stem(x, norm: Norm, small_input: bool):
    """The 7x7 convolution and 3x3 max pooling that take the image to a quarter of its size.

    Args:
        x: rescaled image tensor.
        norm: makes a normalisation layer given its name.
        small_input: keep the resolution (stride 1, no pooling), for 32..64 px crops.

    Returns:
        The stem's output tensor.
    """
    import keras

    stride = 1 if small_input else 2
    x = keras.layers.ZeroPadding2D(3, name="stem_pad")(x)
    x = keras.layers.Conv2D(64, 7, strides=stride, name="stem_conv")(x)
    x = norm("stem_bn")(x)
    x = keras.layers.Activation("relu", name="stem_relu")(x)
    if not small_input:
        x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
    return x


def build_resnet50(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    norm: str = "ours",
    small_input: bool = False,
    dropout: float = 0.0,
    weights: str | Path | None = None,
    freeze_backbone: bool = False,
    synchronized_bn: bool = False,
    name: str = "resnet50",
) -> keras.Model:
    """Builds ResNet-50 with a global-average-pooled, optionally dropped-out, linear head.

    Args:
        input_shape: image shape ``(height, width, channels)``, 32 to 224 px or more; pixels 0..255.
        num_classes: number of logits.
        norm: ``"ours"`` (yolol_tf's BatchNormalization) or ``"keras"`` (keras.layers.BatchNormalization),
            for comparison.
        small_input: drop the stem's downsampling (stride and max pooling), for 32..64 px crops.
        dropout: dropout rate before the logits.
        weights: ``"imagenet"``: the ImageNet weights of ``keras.applications.ResNet50``, from the file Keras
            caches in ``$KERAS_HOME/models`` (never downloaded here); or a local file: that ImageNet file
            (Keras 2 HDF5 layout), or a ``.keras`` or ``.weights.h5`` file of this network (any head, any
            ``norm``), whose layers are matched by name and those of another shape (a head for other
            classes) skipped. ImageNet weights bring their preprocessing into the model (see
            :func:`input_scaling`); a ``.keras`` file brings its own.
        freeze_backbone: make the backbone non-trainable (its BN then runs in inference mode); in training,
            it stays frozen for the whole run (linear probing, one phase; see
            :mod:`yolol_tf.models.finetune`).
        synchronized_bn: aggregate BN moments across replicas under a distribution strategy.
        name: the model's name.

    Returns:
        An uncompiled functional model mapping raw pixels to float32 logits.
    """
    if norm not in NORMS:
        raise UserError(f"resnet50: norm must be one of {sorted(NORMS)}. Received: norm={norm!r}")
    if min(input_shape[:2]) < 32:
        raise UserError(
            f"resnet50: images must be at least 32 px. Received: input_shape={tuple(input_shape)}"
        )
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"resnet50: dropout must be in [0, 1). Received: dropout={dropout}")
    import keras

    make_norm = functools.partial(norm_class(norm), epsilon=1.001e-5, synchronized=bool(synchronized_bn))

    def norm_layer(layer_name: str) -> keras.layers.Layer:
        return make_norm(name=layer_name)

    source = weights_source(weights)
    scale, offset = input_scaling(source)
    inputs = keras.Input(shape=tuple(input_shape), name="pixels")
    x = keras.layers.Rescaling(scale, offset, name="rescale")(inputs)
    x = apply_stem(x, norm_layer, small_input)
    for stage, (filters, blocks) in enumerate(STAGES, start=2):
        for block in range(1, blocks + 1):
            stride = 2 if block == 1 and stage > 2 else 1
            x = apply_bottleneck(
                x, filters, stride, f"stage{stage}_block{block}", norm_layer, projection=block == 1
            )
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    model = keras.Model(inputs, outputs, name=name)
    if source is not None:
        kind, path = source
        if kind == "imagenet":
            load_imagenet_resnet50(model, path)
        else:
            load_weights_by_name(model, path, "resnet50")
    if freeze_backbone:
        set_backbone_trainable(model, False)
    return model


def norm_class(norm: str) -> type:
    """The normalisation layer class that a ``norm`` option (one of :data:`NORMS`) names."""
    import keras

    from yolol_tf.models.layers import BatchNormalization

    return {"ours": BatchNormalization, "keras": keras.layers.BatchNormalization}[norm]


def weights_source(weights: str | Path | None) -> tuple[str, Path] | None:
    """What a ``weights`` option names: ``("imagenet", file)`` for keras.applications' ImageNet file (by
    ``"imagenet"``, or a path to a file in its Keras 2 layout), ``("keras", file)`` for our own Keras 3
    files, or None."""
    if weights is None:
        return None
    if str(weights) == "imagenet":
        return "imagenet", find_imagenet_file()
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UserError(f"resnet50: weights file not found: {path}")
    return ("imagenet" if is_legacy_file(path) else "keras"), path


def input_scaling(source: tuple[str, Path] | None) -> tuple[Any, Any]:
    """The ``rescale`` layer's ``(scale, offset)`` for weights from ``source`` (see :func:`weights_source`).

    From scratch, pixels are scaled to [0, 1]. ImageNet weights expect Keras' "caffe" preprocessing: the
    channel means subtracted, no scaling (the RGB-to-BGR flip is folded into the stem's kernel when they
    are loaded). A ``.keras`` file keeps the scaling it was trained with; a bare ``.weights.h5`` cannot say,
    and gets the default.
    """
    if source is not None and source[0] == "imagenet":
        return 1.0, [-mean for mean in CAFFE_MEAN_RGB]
    saved = saved_layer_config(source[1], "rescale") if source is not None else None
    if saved is not None and _numbers(saved.get("scale")) and _numbers(saved.get("offset", 0.0)):
        return saved["scale"], saved.get("offset", 0.0)
    return 1.0 / 255.0, 0.0


def _numbers(value: Any) -> bool:
    """Whether a saved Rescaling argument is a plain number or a list of them (not a serialised array)."""
    values = value if isinstance(value, list) else [value]
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


SPEC = ModelSpec(
    name="resnet50",
    build=build_resnet50,
    space=(dropout_param(), flag_param("small_input", "no stem downsampling")),
    options=dropout_and_flags("small_input"),
    learning_rates=(3e-5, 3e-3),
    batch_sizes=(16, 32, 64),
    summary="ResNet-50 from bottleneck blocks (3-4-6-3 stages) with our BatchNormalization",
)
