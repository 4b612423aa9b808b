"""Keras 2's legacy HDF5 weights layout, read with h5py (Keras 3 no longer writes or maps it by name).

The layout (``keras.engine.saving.save_weights_to_hdf5_group`` in Keras 2): the root, or its
``model_weights`` group in a whole-model file, lists ``layer_names`` in an attribute (split into
``layer_names0``, ``layer_names1``, ... when longer than HDF5's 64 KB attribute limit); each layer has a group
of that name whose ``weight_names`` attribute lists its weights in order, as TensorFlow names variables
(``conv1_conv/kernel:0``), each stored as a dataset at that path inside the layer's group. Layers without
weights are listed with no weight names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from yolol_tf.errors import UserError


def is_legacy_file(path: str | Path) -> bool:
    """Whether ``path`` is an HDF5 file in Keras 2's layout (a Keras 3 file has a ``layers`` group)."""
    import h5py

    try:
        with h5py.File(Path(path).expanduser(), "r") as store:
            return _weights_group(store) is not None
    except OSError:
        return False


def read_legacy_weights(path: str | Path, who: str) -> dict[str, dict[str, np.ndarray]]:
    """Reads every layer's weights from a file in Keras 2's legacy HDF5 layout.

    Args:
        path: the ``.h5`` file.
        who: the model's name, to start error messages with.

    Returns:
        ``{layer name: {weight name: array}}`` in the file's order; a weight's name is the last part of its
        variable name without the ``:0`` (``kernel``, ``bias``, ``gamma``, ``moving_mean``, ...). Layers
        without weights are left out.
    """
    import h5py

    path = Path(path).expanduser()
    try:
        with h5py.File(path, "r") as store:
            group = _weights_group(store)
            if group is None:
                raise UserError(f"{who}: {path} is not in Keras 2's HDF5 weights layout (no layer_names)")
            layers = {}
            for layer in _names(group, "layer_names"):
                weight_names = _names(group[layer], "weight_names")
                if weight_names:
                    layers[layer] = {_short(name): np.asarray(group[layer][name]) for name in weight_names}
            return layers
    except (OSError, KeyError, TypeError, ValueError) as error:
        raise UserError(f"{who}: cannot read {path} as Keras 2 HDF5 weights ({error})") from None


def _weights_group(store):
    group = store["model_weights"] if "model_weights" in store else store
    return group if "layer_names" in group.attrs or "layer_names0" in group.attrs else None


def _names(group, attribute: str) -> list[str]:
    """A list-of-names attribute, joined from its numbered chunks when Keras had to split it."""
    if attribute in group.attrs:
        values = list(group.attrs[attribute])
    else:
        values, chunk = [], 0
        while f"{attribute}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{attribute}{chunk}"])
            chunk += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _short(weight_name: str) -> str:
    """``conv1_conv/kernel:0`` -> ``kernel``."""
    return weight_name.rsplit("/", 1)[-1].split(":", 1)[0]
