"""TFLite conversion with builtin ops only, its three precisions, and the labels embedded in the file.

:func:`convert_tflite` turns the export's SavedModel into a ``.tflite`` flatbuffer; the precision is one
of the converter settings below (float32, float16 weights, full-integer int8), chosen by the export
target. :func:`make_converter` sets the converter up, for the int8 recovery's quantisation debugger too. An op without a builtin kernel (one that would need the Flex delegate, which phones' LiteRT
runtimes lack) fails the conversion and is named. :func:`embed_labels` adds the labels as a JSON buffer
named ``yolol_tf_labels`` to the model's metadata (read back by
:func:`yolol_tf.inference.runners.read_tflite_labels`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from yolol_tf.errors import UserError
from yolol_tf.inference.runners import TFLITE_LABELS_METADATA
from yolol_tf.runs import Labels

# Sets a ``tf.lite.TFLiteConverter`` up for one precision, given the calibration crops (int8 only).
ConverterSettings = Callable[[Any, "np.ndarray | None"], None]


def float32_settings(converter: Any, calibration: np.ndarray | None) -> None:
    """Float32 as the model computes: the converter's defaults."""


def float16_settings(converter: Any, calibration: np.ndarray | None) -> None:
    """Float16 weights, computed in float32 on CPUs."""
    import tensorflow as tf

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]


def int8_settings(converter: Any, calibration: np.ndarray | None) -> None:
    """Full-integer post-training quantisation calibrated on ``calibration`` crops, int8 in and out."""
    import tensorflow as tf

    samples = calibration.astype(np.float32).copy()
    # Pin the calibrated input range to [0, 255]: a 1-scale, -128-zero-point input takes every uint8
    # pixel losslessly. Two pixels of one crop barely move the activation ranges.
    samples[0, 0, 0, :], samples[0, 0, 1, :] = 0.0, 255.0
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s[None]] for s in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8


def missing_ops(error: Exception) -> list[str]:
    """Op names a TFLite conversion error complains about (no builtin kernel, so Flex/custom needed)."""
    ops = [
        e.operator.name
        for e in getattr(error, "errors", [])
        if getattr(e, "operator", None) and e.operator.name
    ]
    ops += re.findall(r"'(tf\.\w+)' op is neither a custom op nor a flex op", str(error))
    for line in re.findall(r"(?:Flex|Custom) ops: ([\w, ]+)", str(error)):
        ops += [f"tf.{op.strip()}" for op in line.split(",") if op.strip()]
    return sorted(set(ops))


def make_converter(savedmodel: Path, settings: ConverterSettings, calibration: np.ndarray | None) -> Any:
    """A ``tf.lite.TFLiteConverter`` for the ``serve`` signature, builtin ops only, set to one precision.

    Args:
        savedmodel: the export's SavedModel folder.
        settings: one of the ``*_settings`` functions above.
        calibration: crops for int8 calibration (None for the float precisions).
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(savedmodel), signature_keys=["serve"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    settings(converter, calibration)
    return converter


def convert_tflite(
    savedmodel: Path, quantize: str, settings: ConverterSettings, calibration: np.ndarray | None
) -> bytes:
    """The ``serve`` signature of ``savedmodel`` as a TFLite flatbuffer with builtin ops only.

    Args:
        savedmodel: the export's SavedModel folder.
        quantize: the precision's name, for error messages.
        settings: one of the ``*_settings`` functions above: sets the converter's precision.
        calibration: crops for int8 calibration (None for the float precisions).

    Raises:
        UserError: the model needs ops with no builtin kernel, or the converter fails (exit status 1).
    """
    converter = make_converter(savedmodel, settings, calibration)
    try:
        return converter.convert()
    except Exception as e:  # the converter's error types move between TF releases
        ops = missing_ops(e)
        if ops:
            raise UserError(
                f"TFLite conversion needs ops with no builtin kernel: {', '.join(ops)}. They would need the "
                "Flex delegate (select TF ops), which phones' LiteRT runtimes lack; replace them in the model "
                "or export --format savedmodel",
                exit_code=1,
            ) from None
        first = next((ln for ln in str(e).splitlines() if "error" in ln.lower()), str(e).splitlines()[0])
        raise UserError(f"TFLite conversion ({quantize}) failed: {first[:500]}", exit_code=1) from None


def embed_labels(tflite: bytes, labels: Labels) -> bytes:
    """Adds the labels as a JSON buffer named ``yolol_tf_labels`` to the model's metadata list.

    Args:
        tflite: the converted model.
        labels: what to embed.
    """
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    payload = json.dumps(labels.to_dict()).encode("utf-8")
    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(payload, dtype=np.uint8)
    model.buffers.append(buffer)
    meta = schema.MetadataT()
    meta.name = TFLITE_LABELS_METADATA
    meta.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != TFLITE_LABELS_METADATA.encode()] + [meta]
    builder = flatbuffers.Builder(len(tflite) + len(payload) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
