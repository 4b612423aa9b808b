"""The ImageNet weights of ``keras.applications.ResNet50``, from the file Keras downloads, in our ResNet-50.

Keras caches the file as ``$KERAS_HOME/models/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``
(``..._kernels.h5`` with the 1000-class top); it is in Keras 2's legacy HDF5 layout
(:mod:`yolol_tf.models.weights.keras_legacy`), with layers named ``conv1_conv``, ``conv2_block1_1_conv``,
``conv2_block1_0_bn`` (the shortcut) ... ``probs``. They map onto ours by position in the network:
``conv1`` is our stem, ``convS_blockB_K`` our ``stageS_blockB_convK``/``bnK`` and ``_0_`` our shortcut.

The weights expect Keras' "caffe" preprocessing: RGB to BGR, the ImageNet channel means subtracted, no
scaling. Our models take raw RGB pixels, so the channel flip is folded into the stem convolution's kernel
(its input channels reversed when loaded) and the means are subtracted in RGB order by the model's
``rescale`` layer (:data:`CAFFE_MEAN_RGB`): the same numbers, no extra op, and builtins only in TFLite.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from yolol_tf.errors import UserError
from yolol_tf.models.weights.keras_legacy import read_legacy_weights

if TYPE_CHECKING:
    import keras

# Without and with the 1000-class top; the first found is used.
FILES = (
    "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
)
# Where keras.applications downloads them from (keras/src/applications/resnet.py).
BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
# keras.applications.imagenet_utils' "caffe" means, here in RGB order (it subtracts them after RGB -> BGR).
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
_BLOCK = re.compile(r"conv([2-5])_block(\d+)_([0-3])_(conv|bn)")


def keras_models_dir() -> Path:
    """Where Keras caches downloaded weights: ``$KERAS_HOME/models``, by default ``~/.keras/models``.

    Keras' own rule (keras/src/backend/config.py): ``$KERAS_HOME``, else ``~/.keras``, or ``/tmp/.keras``
    when the home folder is not writable.
    """
    if "KERAS_HOME" in os.environ:
        return Path(os.environ["KERAS_HOME"]).expanduser() / "models"
    home = Path("~").expanduser()
    return (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras" / "models"


def find_imagenet_file() -> Path:
    """The ImageNet ResNet50 file in Keras' cache, or a UserError saying where it goes and comes from."""
    folder = keras_models_dir()
    for name in FILES:
        if (folder / name).is_file():
            return folder / name
    raise UserError(
        f"ResNet-50: weights='imagenet' reads the ImageNet file that Keras downloads, {FILES[0]} "
        f"(or {FILES[1]}), from $KERAS_HOME/models (here {folder}), and it is not there; yolol-tf "
        f"downloads nothing. Get it from "
        f"{BASE_URL}{FILES[0]} (or run keras.applications.ResNet50(weights='imagenet', include_top=False) "
        f"once where there is internet) and put it in {folder}, or give its path: weights: PATH"
    )


def our_layer_name(theirs: str) -> str | None:
    """Our name for a layer of keras.applications' ResNet50, or None.

    ``conv1_conv`` -> ``stem_conv``, ``conv3_block2_1_bn`` -> ``stage3_block2_bn1``, ``conv3_block1_0_bn``
    -> ``stage3_block1_shortcut_bn``, ``probs`` -> ``logits``.
    """
    if theirs in ("conv1_conv", "conv1_bn"):
        return "stem_" + theirs.split("_")[1]
    if theirs == "probs":
        return "logits"
    match = _BLOCK.fullmatch(theirs)
    if match is None:
        return None
    stage, block, index, kind = match.groups()
    suffix = f"shortcut_{kind}" if index == "0" else f"{kind}{index}"
    return f"stage{stage}_block{block}_{suffix}"


def load_imagenet_resnet50(model: keras.Model, path: str | Path) -> list[str]:
    """Fills our ResNet-50's backbone (and a 1000-class head) from keras.applications' ImageNet file.

    Every layer of the file with weights must map onto one of ours with the same weights, and every one of
    our backbone layers must be filled, or the file is not that network: the UserError names what did not
    match. The stem kernel's input channels are reversed (BGR to RGB, see the module docstring).

    Args:
        model: a ResNet-50 built by :func:`yolol_tf.models.resnet50.build_resnet50`.
        path: the ``.h5`` file.

    Returns:
        The names of our layers loaded.
    """
    path = Path(path).expanduser()
    stored = read_legacy_weights(path, "ResNet-50")
    ours = {layer.name: layer for layer in model.layers if layer.weights}
    unknown, differing, loaded = [], [], []
    for theirs, values in stored.items():
        name = our_layer_name(theirs)
        layer = ours.get(name) if name else None
        if layer is None:
            unknown.append(theirs)
            continue
        names = [w.name for w in layer.weights]
        shapes_match = set(values) == set(names) and all(
            tuple(values[w.name].shape) == tuple(w.shape) for w in layer.weights
        )
        if not shapes_match:
            if name != "logits":  # a head for other classes is expected not to fit
                have = {k: tuple(v.shape) for k, v in values.items()}
                want = {w.name: tuple(w.shape) for w in layer.weights}
                differing.append(f"{theirs} {have} vs {name} {want}")
            continue
        for variable in layer.weights:
            value = values[variable.name]
            if name == "stem_conv" and variable.name == "kernel":
                value = value[:, :, ::-1, :]  # the file's stem reads BGR; ours reads RGB
            variable.assign(value.astype(np.float32))
        loaded.append(name)
    # The file must fill every layer but the head, which it fills only when it has the same shape.
    missing = [name for name in ours if name != "logits" and name not in loaded]
    if unknown or differing or missing:
        problems = []
        for what, names in (
            ("layers of the file that match none of ours", unknown),
            ("layers whose weights differ", differing),
            ("of our layers not in the file", missing),
        ):
            if names:
                shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
                problems.append(f"{len(names)} {what}: {shown}")
        raise UserError(
            f"ResNet-50: {path} is not the ImageNet ResNet50 of keras.applications ({'; '.join(problems)})"
        )
    return loaded
