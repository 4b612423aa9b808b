"""ONNX export through Keras' own exporter, the probabilities inside the graph and the labels in its metadata.

The model is wrapped so that the graph ends in probabilities (the labels' sigmoid or softmax after the
logits, as in the SavedModel export) and exported by ``keras.Model.export(path, format="onnx")``, which
traces the model's ``tf.function`` and converts it with tf2onnx (after applying Keras' patch that makes
tf2onnx work with numpy 2). ``tf2onnx.convert.from_keras`` is not used: it does not handle Keras 3
models. The exporter needs a float32 dtype policy, so a model trained under mixed precision is exported
from a float32 copy (:func:`yolol_tf.inference.loading.float32_model`).

The file's contract: input ``pixels`` float32 ``[batch, S, S, C]`` (raw 0..255), output ``probabilities``
float32 ``[batch, classes]``; ``metadata_props`` holds the labels as JSON under ``yolol_tf_labels``
(read it with :func:`yolol_tf.inference.runners.read_onnx_labels`).
"""

from __future__ import annotations

import importlib
import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from yolol_tf.errors import UserError
from yolol_tf.inference.loading import input_shape
from yolol_tf.inference.runners import ONNX_INPUT, ONNX_INSTALL, ONNX_LABELS_METADATA, ONNX_OUTPUT
from yolol_tf.runs import Labels

if TYPE_CHECKING:
    import keras

# What the export imports; the runtime alone (onnxruntime) is enough to run the file.
REQUIREMENTS = ("tf2onnx", "onnx", "onnxruntime")


def require() -> None:
    """Refuses an ONNX export early when its packages are missing.

    Raises:
        UserError: tf2onnx, onnx or onnxruntime cannot be imported (exit status 2).
    """
    missing = []
    for name in REQUIREMENTS:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UserError(f"ONNX export needs {', '.join(missing)}, which are not installed: {ONNX_INSTALL}")


def probability_model(model: keras.Model, activation: str) -> keras.Model:
    """``model`` (logits out) followed by the labels' activation, as one float32 Keras model.

    Args:
        model: the float32 Keras model.
        activation: "sigmoid" or "softmax".
    """
    import keras

    if activation not in ("sigmoid", "softmax"):
        raise UserError(f"activation must be 'sigmoid' or 'softmax'. Received: activation={activation!r}")
    pixels = keras.Input(input_shape(model), dtype="float32", name=ONNX_INPUT)
    logits = model(pixels)
    if isinstance(logits, (list, tuple)):
        # A run's best.keras is saved with outputs=[logits] (a one-element list): the activation would
        # stack the list into [1, batch, classes].
        (logits,) = logits
    probabilities = keras.layers.Activation(activation, dtype="float32", name=ONNX_OUTPUT)(logits)
    return keras.Model(pixels, probabilities, name=f"{model.name}_probabilities")


def write_onnx(model: keras.Model, labels: Labels, path: Path) -> None:
    """Writes the ONNX file: pixels in, probabilities out, no labels yet (see :func:`embed_labels`).

    Args:
        model: the float32 Keras model (logits out).
        labels: whose activation ends the graph.
        path: the ``.onnx`` file to write.

    Raises:
        UserError: tf2onnx cannot convert the model (exit status 1).
    """
    import onnx
    import tensorflow as tf

    wrapped = probability_model(model, labels.activation)
    spec = tf.TensorSpec((None, *input_shape(model)), tf.float32, name=ONNX_INPUT)
    tf2onnx_logger = logging.getLogger("tf2onnx")
    level = tf2onnx_logger.level
    try:
        tf2onnx_logger.setLevel(logging.ERROR)  # its INFO lines describe every rewrite
        with warnings.catch_warnings():
            # Keras' numpy-2 patch probes np.object, which numpy 2 answers with a FutureWarning.
            warnings.simplefilter("ignore", FutureWarning)
            wrapped.export(str(path), format="onnx", verbose=False, input_signature=[spec])
    except Exception as e:  # tf2onnx raises many kinds for an op it cannot convert
        first = (str(e).splitlines() or [""])[0][:500]
        raise UserError(f"ONNX conversion failed: {type(e).__name__}: {first}", exit_code=1) from None
    finally:
        tf2onnx_logger.setLevel(level)
    # tf2onnx names the output after the traced function's ("Identity:0"); the contract's name is clearer.
    proto = onnx.load(str(path))
    (old,) = [o.name for o in proto.graph.output]
    for node in proto.graph.node:
        node.output[:] = [ONNX_OUTPUT if name == old else name for name in node.output]
    proto.graph.output[0].name = ONNX_OUTPUT
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def embed_labels(path: Path, labels: Labels) -> None:
    """Stores the labels as JSON under ``yolol_tf_labels`` in the file's ``metadata_props`` (in place).

    Args:
        path: the ``.onnx`` file (still in the export's work folder).
        labels: what to embed.
    """
    import onnx

    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    props[ONNX_LABELS_METADATA] = json.dumps(labels.to_dict())
    onnx.helper.set_model_props(proto, props)  # replaces the list: one entry per key
    onnx.save(proto, str(path))
