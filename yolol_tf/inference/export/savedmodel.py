"""The SavedModel every export starts from: raw pixels in, probabilities out, behind a ``serve`` signature.

Models output logits, so the labels' activation (sigmoid, or softmax for single-label models) is added
to the exported graph here; :func:`yolol_tf.models.outputs.activate` is its numpy twin, used by the
Keras runner the export is compared with. TFLite files are converted from this SavedModel.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from yolol_tf.errors import UserError
from yolol_tf.inference.loading import input_shape
from yolol_tf.runs import Labels

if TYPE_CHECKING:
    import keras
    import tensorflow as tf


def tf_activation(name: str) -> Callable[[tf.Tensor], tf.Tensor]:
    """The TensorFlow op for a labels' activation name.

    Args:
        name: "sigmoid" (multi-label) or "softmax" (single-label).
    """
    import tensorflow as tf

    ops = {"sigmoid": tf.sigmoid, "softmax": tf.nn.softmax}
    if name not in ops:
        raise UserError(f"activation must be 'sigmoid' or 'softmax'. Received: activation={name!r}")
    return ops[name]


def write_savedmodel(model: keras.Model, labels: Labels, folder: Path) -> None:
    """A SavedModel whose ``serve`` (and ``serving_default``) signature maps pixels to probabilities.

    Args:
        model: the Keras model (logits out).
        labels: whose activation turns the logits into probabilities.
        folder: where to write it.
    """
    import keras
    import tensorflow as tf

    activation = tf_activation(labels.activation)

    def serve(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"probabilities": activation(tf.cast(model(pixels, training=False), tf.float32))}

    pixels = tf.TensorSpec((None, *input_shape(model)), tf.float32, name="pixels")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve, input_signature=[pixels])
    archive.write_out(str(folder), verbose=False)
