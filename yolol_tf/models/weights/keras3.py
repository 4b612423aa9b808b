"""Keras 3 weights files of our own models: ``.keras`` archives and bare ``.weights.h5`` files.

A ``.keras`` file names its layers, so layers are matched by name; a bare ``.weights.h5`` file does not, so
they are matched by position among layers of the same class, as ``Model.load_weights`` does. Either way a
layer whose weights have other shapes in the file (a head for a different number of classes), or that the
file lacks, keeps its initial weights: the caller decides whether what was loaded is enough.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yolol_tf.errors import UserError

if TYPE_CHECKING:
    import keras


def load_weights_by_name(model: keras.Model, path: str | Path, who: str) -> list[str]:
    """Copies weights from a local Keras 3 ``.keras`` or ``.weights.h5`` file into matching layers.

    Args:
        model: the model to fill.
        path: the weights file; nothing is downloaded.
        who: the model's name, to start error messages with.

    Returns:
        The names of the layers loaded (at least one, else a UserError).
    """
    import h5py  # a Keras dependency; imported here because only transfer learning needs it

    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{who}: weights file not found: {path}")
    own_keys = _storage_keys((type(layer).__name__, layer.name) for layer in model.layers)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json"))
                source = io.BytesIO(archive.read("model.weights.h5"))
            saved_layers = config["config"]["layers"]
            keys = _storage_keys((entry["class_name"], entry["config"]["name"]) for entry in saved_layers)
        else:
            source, keys = path, own_keys
        with h5py.File(source, "r") as store:
            loaded = _assign(model, store["layers"], keys)
    except (OSError, KeyError, TypeError, ValueError) as error:
        raise UserError(f"{who}: {path} is not a Keras 3 .keras or .weights.h5 file ({error})") from None
    if not loaded:
        raise UserError(f"{who}: no layer of {path} matches this network's layers")
    return loaded


def saved_layer_config(path: str | Path, name: str) -> dict[str, Any] | None:
    """The config of the layer called ``name`` in a ``.keras`` file, or None (absent, or not a ``.keras``).

    A model keeps the input scaling its weights were trained with: a builder reads the source's own
    ``rescale`` layer with this rather than assuming its default.
    """
    path = Path(path).expanduser()
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            layers = json.loads(archive.read("config.json"))["config"]["layers"]
    except (OSError, KeyError, TypeError, ValueError):
        return None
    return next((entry["config"] for entry in layers if entry.get("config", {}).get("name") == name), None)


def _storage_keys(layers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Maps layer names to the keys Keras 3 stores their weights under (snake-case class name + ordinal)."""
    counts: dict[str, int] = {}
    keys = {}
    for class_name, name in layers:
        key = re.sub("([a-z])([A-Z])", r"\1_\2", re.sub("(.)([A-Z][a-z]+)", r"\1_\2", class_name)).lower()
        counts[key] = counts.get(key, -1) + 1
        keys[name] = key if counts[key] == 0 else f"{key}_{counts[key]}"
    return keys


def _assign(model: keras.Model, stored, keys: dict[str, str]) -> list[str]:
    loaded = []
    for layer in model.layers:
        key = keys.get(layer.name)
        if not layer.weights or key not in stored or "vars" not in stored[key]:
            continue
        saved = stored[key]["vars"]
        values = [saved[str(i)][()] for i in range(len(saved))]
        if len(values) != len(layer.weights) or any(
            tuple(v.shape) != tuple(w.shape) for v, w in zip(values, layer.weights, strict=True)
        ):
            continue
        for variable, value in zip(layer.weights, values, strict=True):
            variable.assign(value)
        loaded.append(layer.name)
    return loaded
