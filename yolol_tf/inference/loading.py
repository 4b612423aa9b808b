"""What evaluate and export start from: a ``.keras`` model with its labels, and the data its run trained on.

:func:`load_keras_with_labels` resolves a run folder or ``.keras`` file, loads the model and its
``labels.json`` (or default labels) and checks that they agree; :func:`run_data` opens the data the
model's run was trained on, prepared with the run's crop options, or the data the user names instead.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

from yolol_tf.data.settings import DataSettings
from yolol_tf.errors import UserError
from yolol_tf.runs import Labels, ResolvedModel, read_run_config, resolve_model

if TYPE_CHECKING:
    import keras

    from yolol_tf.data import DataSource

# Settings of a run's config.yaml that decide which samples the model sees.
DATA_FIELDS = tuple(f.name for f in dataclasses.fields(DataSettings))


def input_shape(model: keras.Model) -> tuple[int | None, ...]:
    """(height, width, channels) of the model's raw-pixel input; None where the model leaves it open."""
    return tuple(None if d is None else int(d) for d in model.inputs[0].shape[1:])


def num_outputs(model: keras.Model) -> int:
    """Output units: one logit per class."""
    return int(model.outputs[0].shape[-1])


def float32_model(model: keras.Model) -> keras.Model:
    """``model`` computing in float32: itself, or a copy with its weights when it was trained under mixed
    precision (a ``mixed_float16`` layer computes in float16 even on a CPU).

    ONNX export needs it: Keras' ONNX exporter requires a float32 dtype policy, and onnxruntime's CPU
    kernels are float32. The variables of a mixed-precision model are float32 already, so the copy loses
    nothing.

    Args:
        model: a loaded model.
    """
    import keras

    def float32_policies(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy" and str(
                node.get("config", {}).get("name", "")
            ).startswith("mixed_"):
                return {**node, "config": {**node["config"], "name": "float32"}}
            return {k: float32_policies(v) for k, v in node.items()}
        if isinstance(node, list):
            return [float32_policies(v) for v in node]
        return node

    config = keras.saving.serialize_keras_object(model)
    converted = float32_policies(config)
    if converted == config:
        return model
    copy = keras.saving.deserialize_keras_object(converted)
    copy.set_weights(model.get_weights())
    return copy


def load_keras_with_labels(
    model: str | os.PathLike, *, command: str
) -> tuple[ResolvedModel, keras.Model, Labels]:
    """Loads a run's (or a ``.keras`` file's) model with the labels that travel with it.

    Args:
        model: a run folder (its ``best.keras``) or a ``.keras`` file, with ``labels.json`` beside it
            for names and tuned thresholds (without one: ``class_0``... and 0.5).
        command: what is loading it ("evaluate", "export"), named when ``model`` is not a Keras model.

    Returns:
        (where the model and its labels were found, the uncompiled model, its labels).

    Raises:
        UserError: no model there, not a ``.keras`` model, a file Keras cannot load, or labels whose
            class count differs from the model's outputs.
    """
    from yolol_tf.models import load_model

    resolved = resolve_model(model)
    if resolved.model_path.suffix != ".keras":
        raise UserError(
            f"{command} reads Keras models (.keras files or run folders). Received: {resolved.model_path}. "
            f"{command.capitalize()} the run folder the export came from instead."
        )
    keras_model = load_model(resolved.model_path)
    outputs = num_outputs(keras_model)
    if resolved.labels_path is None:
        labels = Labels.default(outputs, input_shape(keras_model))
    else:
        labels = Labels.load(resolved.labels_path)
    if len(labels.names) != outputs:
        raise UserError(
            f"{resolved.labels_path}: {len(labels.names)} class names but the model "
            f"{resolved.model_path} has {outputs} outputs"
        )
    return resolved, keras_model, labels


def run_config(resolved: ResolvedModel) -> dict[str, Any] | None:
    """The ``config.yaml`` of the run the model belongs to, or None for a model outside a run folder.

    A model file inside a run folder (``RUN/last.keras``) still belongs to its run.
    """
    return read_run_config(resolved.run_dir or resolved.model_path.parent)


def run_data(resolved: ResolvedModel, data: str | os.PathLike | None, size: int | None) -> DataSource:
    """Opens ``data``, or the data the model's run trained on, prepared the way the run prepared it.

    Args:
        resolved: the model and its run folder.
        data: a store, YOLO dataset or Sign-MNIST CSV; None = the run's data (its config.yaml), else the
            embedded demo data.
        size: the side the model takes, which a YOLO dataset is prepared at (it wins over the run's
            config.yaml, which older runs wrote before the data had set the size); None = the run's.
    """
    from yolol_tf.data import open_data

    config = run_config(resolved) or {}
    # The run's data settings (config.yaml holds a TrainConfig, which is a DataSettings).
    settings = DataSettings.of(None, **{k: v for k, v in config.items() if k in DATA_FIELDS})
    if data is not None:
        # Other data: the run's crop options still apply, but its extra test CSV belongs to its own data.
        settings = dataclasses.replace(settings, data=str(data), val=None)
    return open_data(settings, size=size)


__all__ = ["float32_model", "input_shape", "load_keras_with_labels", "num_outputs", "run_config", "run_data"]
