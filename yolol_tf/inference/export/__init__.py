"""Export a trained model for TensorFlow Serving (SavedModel), phones (TFLite) or onnxruntime (ONNX), checked
before it counts.

Every export takes raw pixels (0..255, the model's input size) and returns per-class probabilities: the
sigmoid (or, for single-label labels, softmax) is added to the graph here because models output logits.
Class names and thresholds travel with it: ``labels.json`` and ``labels.txt`` inside a SavedModel folder,
``<name>.labels.json`` and ``<name>.labels.txt`` beside a ``.tflite`` or ``.onnx`` file, and the same
JSON inside the file: a buffer named ``yolol_tf_labels`` in a ``.tflite`` file's metadata list, an entry
``yolol_tf_labels`` in an ``.onnx`` file's ``metadata_props`` (read them with
``yolol_tf.inference.runners.read_tflite_labels`` and ``read_onnx_labels``).

TFLite uses builtin ops only, so the file runs on any LiteRT runtime without the Flex delegate. int8 is
full-integer post-training quantisation calibrated on the run's training crops, with int8 input and
output. The input is calibrated on the range [0, 255] exactly (one calibration crop gets a black and a
white pixel), so its scale is 1 and zero point -128: a uint8 pixel ``p`` is fed as ``p - 128``, and the
int8 output ``q`` means probability ``(q + 128) / 256``. Read both from the interpreter's
``quantization`` details rather than hard-coding them.

ONNX goes through Keras' own exporter (tf2onnx underneath), from a float32 copy of a mixed-precision
model; it needs ``pip install "yolol-tf[onnx]"``.

Before anything appears under the final name, the export runs on validation crops (SavedModel through
``tf.saved_model.load``, TFLite through the LiteRT interpreter, ONNX through onnxruntime) and is compared
with the Keras model: float32 must agree within 1e-4 in probability; float16 and int8 may lose at most
``max_drop`` mAP. An int8 export that loses more is recovered: the quantisation debugger finds the ops
int8 hurts most and the fewest of them are kept in float (``ExportResult.float_layers``, and the cost in
size and latency in the summary). What still fails is kept aside as
``<name>.REFUSED-map-drop-<drop>.tflite`` and a ``UserError`` (exit status 1) is raised, unless
``force``. A quantised export's thresholds are tuned again on its own outputs on the check crops.

The package, one concern a module::

    pipeline.py     export(): the steps in order
    targets.py      the kinds of export (format x precision): name, build, load, labels, check tolerance
    savedmodel.py   the SavedModel every TensorFlow export starts from (the output activation in the graph)
    tflite.py       TFLite conversion, its precisions, labels embedded in the file
    recovery.py     int8 that loses too much: the quantisation debugger and the search for float layers
    onnx.py         ONNX through Keras' exporter, labels in its metadata
    crops.py        the crops to calibrate and check on
    checks.py       comparison with Keras, refusal, per-export thresholds, latency
    files.py        refused names, labels files, the atomic move into place
    result.py       ExportResult and its summary table

Example::

    from yolol_tf.inference.export import export
    result = export("saved_models/first", "tflite", quantize="int8")
    print(result.summary(), result.float_layers)
"""

from __future__ import annotations

from yolol_tf.inference.export.checks import latency_ms
from yolol_tf.inference.export.pipeline import export
from yolol_tf.inference.export.result import ExportResult
from yolol_tf.inference.export.targets import FORMATS, QUANTIZE, default_destination
from yolol_tf.inference.export.tflite import embed_labels

__all__ = [
    "FORMATS",
    "QUANTIZE",
    "ExportResult",
    "default_destination",
    "embed_labels",
    "export",
    "latency_ms",
]
