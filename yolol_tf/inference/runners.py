"""Loaded models behind one interface: raw uint8 pixels in, per-class probabilities out.

A model is a run folder, a ``.keras`` file, a SavedModel folder, a ``.tflite`` file (float or int8) or an
``.onnx`` file (run by onnxruntime, ``pip install "yolol-tf[onnx]"``);
:func:`load_runner` finds its labels (:func:`labels_for`) and hides the format behind :class:`Runner`.
Export checks its files through the same runners that ``predict`` uses, so what was checked is what runs.

Example::

    from yolol_tf.inference.runners import load_runner
    runner = load_runner("saved_models/first/best.int8.tflite")
    probabilities = runner(crops)  # uint8 [B, S, S, 3] -> float32 [B, C]
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from yolol_tf.errors import UserError
from yolol_tf.inference.loading import input_shape, load_keras_with_labels, num_outputs
from yolol_tf.models.outputs import activate
from yolol_tf.runs import Labels, resolve_model

if TYPE_CHECKING:
    import keras

TFLITE_LABELS_METADATA = "yolol_tf_labels"  # name of the JSON buffer export embeds in a .tflite
ONNX_LABELS_METADATA = "yolol_tf_labels"  # key of the labels JSON in an .onnx file's metadata_props
ONNX_INPUT, ONNX_OUTPUT = "pixels", "probabilities"  # the exported graph's input and output names
ONNX_INSTALL = 'pip install "yolol-tf[onnx]"'


def _first_line(error: Exception) -> str:
    """``Type: first line of the message`` (clipped), for a UserError about a file that will not load."""
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:300]}"


class Runner:
    """A loaded model: raw pixels ``[B, S, S, 3]`` (0..255) in, probabilities ``[B, C]`` out.

    Attributes:
        labels: class names, thresholds, activation and input shape.
        kind: "keras", "savedmodel", "tflite" or "onnx".
        path: the model file or folder.
    """

    kind = "model"

    def __init__(self, path: Path, labels: Labels) -> None:
        self.path = path
        self.labels = labels

    @property
    def size(self) -> int:
        """Side of the square input, in pixels."""
        return int(self.labels.input_shape[0])

    @property
    def io_quantization(self) -> tuple[tuple[float, int], tuple[float, int]] | None:
        """For an integer model, the input and output ``(scale, zero_point)`` pairs; None otherwise."""
        return None

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities ``[B, C]`` (float32) for raw pixels ``[B, S, S, channels]`` (0..255)."""
        raise NotImplementedError


class KerasRunner(Runner):
    """A ``.keras`` model (logits out); the labels' activation is applied here.

    Args:
        path: the ``.keras`` file.
        labels: its labels; default: those found beside it (see :func:`load_keras_with_labels`).
        model: the model, when already loaded from ``path``.
    """

    kind = "keras"

    def __init__(self, path: Path, labels: Labels | None = None, model: keras.Model | None = None) -> None:
        import tensorflow as tf

        if model is None:
            _, model, found = load_keras_with_labels(path, command="predict")
            labels = labels or found
        self.model = model
        shape = input_shape(model)
        super().__init__(path, labels or Labels.default(num_outputs(model), shape))
        # One traced graph for every batch size: eager calls cost more than small models themselves.
        spec = tf.TensorSpec((None, *shape), tf.float32)
        self._call = tf.function(lambda x: self.model(x, training=False), input_signature=[spec])

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        logits = self._call(np.asarray(pixels, np.float32)).numpy().astype(np.float64)
        return activate(logits, self.labels.activation).astype(np.float32)


class SavedModelRunner(Runner):
    """A SavedModel folder written by ``yolol-tf export``: its ``serve`` signature returns probabilities."""

    kind = "savedmodel"

    def __init__(self, path: Path, labels: Labels | None = None) -> None:
        import tensorflow as tf

        try:
            self._loaded = tf.saved_model.load(str(path))
        except Exception as e:  # a corrupt or foreign saved_model.pb: TF raises many kinds
            raise UserError(f"{path}: cannot load the SavedModel ({_first_line(e)})") from None
        sigs = self._loaded.signatures
        key = "serve" if "serve" in sigs else "serving_default"
        if key not in sigs:
            raise UserError(f"{path}: the SavedModel has no 'serve' or 'serving_default' signature")
        self._fn = sigs[key]
        (self._input,) = self._fn.structured_input_signature[1].keys()
        spec = self._fn.structured_input_signature[1][self._input]
        shape = tuple(int(d) for d in spec.shape[1:])
        self._output = next(iter(self._fn.structured_outputs))
        num_classes = int(self._fn.structured_outputs[self._output].shape[-1])
        super().__init__(path, labels or Labels.default(num_classes, shape))

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        out = self._fn(**{self._input: tf.constant(np.asarray(pixels, np.float32))})
        return out[self._output].numpy().astype(np.float32)


def _interpreter(path: Path):
    """The LiteRT interpreter (``ai-edge-litert``), else TensorFlow's bundled one."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - platforms without an ai-edge-litert wheel
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=str(path))


class TFLiteRunner(Runner):
    """A ``.tflite`` file; int8 inputs and outputs are (de)quantised with the file's own parameters.

    The int8 input's scale and zero point map 0..255 pixels into -128..127 (export pins the calibrated
    input range to [0, 255], so the scale is 1 and a uint8 pixel p becomes p - 128 exactly); outputs are
    dequantised back to probabilities.
    """

    kind = "tflite"

    def __init__(self, path: Path, labels: Labels | None = None) -> None:
        try:
            self.interpreter = _interpreter(path)
            self._in = self.interpreter.get_input_details()[0]
            self._out = self.interpreter.get_output_details()[0]
        except Exception as e:  # junk bytes, an empty or truncated file: the runtime raises many kinds
            raise UserError(f"{path}: cannot load the TFLite model ({_first_line(e)})") from None
        shape = tuple(int(d) for d in self._in["shape"][1:])
        num_classes = int(self._out["shape"][-1])
        super().__init__(path, labels or Labels.default(num_classes, shape))
        self._batch = None

    @property
    def io_details(self) -> tuple[dict, dict]:
        """The interpreter's input and output tensor details (dtype, shape, quantization)."""
        return self._in, self._out

    @property
    def quantized(self) -> bool:
        """True for an integer (int8) model: pixels and probabilities are (de)quantised here."""
        return self._in["dtype"] in (np.int8, np.uint8)

    @property
    def io_quantization(self) -> tuple[tuple[float, int], tuple[float, int]] | None:
        if not self.quantized:
            return None
        (si, zi), (so, zo) = self._in["quantization"], self._out["quantization"]
        return (float(si), int(zi)), (float(so), int(zo))

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        x = np.asarray(pixels, np.float32)
        if self._batch != len(x):
            # The exported batch dimension is dynamic (-1); resize once per distinct batch size.
            self.interpreter.resize_tensor_input(self._in["index"], [len(x), *x.shape[1:]])
            self.interpreter.allocate_tensors()
            self._batch = len(x)
        if self.quantized:
            scale, zero = self._in["quantization"]
            info = np.iinfo(self._in["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(self._in["dtype"])
        self.interpreter.set_tensor(self._in["index"], x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self._out["index"])
        if self._out["dtype"] in (np.int8, np.uint8):
            scale, zero = self._out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return np.asarray(y, np.float32)


def _onnxruntime():
    """The onnxruntime module, or a UserError naming the extra that installs it."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError(
            f"Running an .onnx model needs onnxruntime, which is not installed: {ONNX_INSTALL}"
        ) from None
    return onnxruntime


class OnnxRunner(Runner):
    """An ``.onnx`` file written by ``yolol-tf export --format onnx``, run by onnxruntime on the CPU.

    Its graph takes float32 pixels and returns probabilities. Without labels given, those embedded in
    the file's ``metadata_props`` are used (see :func:`read_onnx_labels`).

    Attributes:
        embedded_labels: the labels embedded in the file, or None.

    Args:
        path: the ``.onnx`` file.
        labels: its labels; default: the embedded ones, else ``class_0``... and 0.5.
        providers: onnxruntime execution providers; default the CPU (what export checks with).
    """

    kind = "onnx"

    def __init__(self, path: Path, labels: Labels | None = None, providers: list[str] | None = None) -> None:
        ort = _onnxruntime()
        try:
            self.session = ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # junk bytes, an empty or truncated file: onnxruntime raises its own kinds
            raise UserError(f"{path}: cannot load the ONNX model ({_first_line(e)})") from None
        inputs, (out, *_) = self.session.get_inputs(), self.session.get_outputs()
        inp = inputs[0]
        if (
            len(inputs) != 1
            or inp.type != "tensor(float)"
            or len(inp.shape) != 4
            or not all(isinstance(d, int) for d in inp.shape[1:])
        ):
            received = "; ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
            raise UserError(
                f"{path}: expected one float input [batch, height, width, channels] (as export writes). "
                f"Received: {received}"
            )
        self._input, self._output = inp.name, out.name
        shape = tuple(int(d) for d in inp.shape[1:])
        self.embedded_labels = _embedded_onnx_labels(self.session, path)
        super().__init__(path, labels or self.embedded_labels or Labels.default(int(out.shape[-1]), shape))

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        (probs,) = self.session.run([self._output], {self._input: np.asarray(pixels, np.float32)})
        return np.asarray(probs, np.float32)


def _embedded_onnx_labels(session, path: Path) -> Labels | None:
    """The labels in an onnxruntime session's model metadata, or None."""
    text = session.get_modelmeta().custom_metadata_map.get(ONNX_LABELS_METADATA)
    if text is None:
        return None
    try:
        return Labels.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: its embedded {ONNX_LABELS_METADATA} are not valid labels ({e})") from None


def read_onnx_labels(path: str | os.PathLike) -> Labels | None:
    """The labels export embedded in an ``.onnx`` file's ``metadata_props``, or None if it carries none.

    Args:
        path: the ``.onnx`` file.

    Raises:
        UserError: onnxruntime is missing, or the file is not a readable ONNX model.
    """
    return OnnxRunner(Path(path)).embedded_labels


def read_tflite_labels(path: str | os.PathLike) -> Labels | None:
    """The labels export embedded in a ``.tflite`` file's metadata, or None if it carries none.

    Args:
        path: the ``.tflite`` file.

    Raises:
        UserError: the file is not a readable TFLite model (junk bytes, empty, truncated).
    """
    from tensorflow.lite.python import schema_py_generated as schema

    buf = Path(path).read_bytes()
    try:
        if len(buf) < 8 or buf[4:8] != b"TFL3":  # flatbuffers read any bytes; the identifier says TFLite
            raise ValueError("no TFL3 file identifier")
        model = schema.Model.GetRootAsModel(buf, 0)
        for i in range(model.MetadataLength()):
            meta = model.Metadata(i)
            if meta.Name() == TFLITE_LABELS_METADATA.encode():
                data = json.loads(model.Buffers(meta.Buffer()).DataAsNumpy().tobytes().decode("utf-8"))
                return Labels.from_dict(data)
    except Exception as e:  # offsets read from junk point anywhere: struct.error, IndexError, ...
        raise UserError(f"{path}: cannot load the TFLite model ({_first_line(e)})") from None
    return None


def labels_for(path: Path) -> Labels | None:
    """A labels file beside or inside the model, else the one embedded in a .tflite or .onnx, else None.

    An export's own labels (``best.int8.labels.json`` beside ``best.int8.tflite``, or embedded) win over
    the run's ``labels.json``: their thresholds were tuned on that export's outputs.

    Args:
        path: a ``.tflite`` or ``.onnx`` file, SavedModel folder, ``.keras`` file or run folder.
    """
    if path.suffix in (".tflite", ".onnx"):
        beside = path.with_suffix(".labels.json")
        if beside.is_file():
            return Labels.load(beside)
        embedded = read_tflite_labels(path) if path.suffix == ".tflite" else read_onnx_labels(path)
        if embedded is not None:
            return embedded
    resolved = resolve_model(path)
    return Labels.load(resolved.labels_path) if resolved.labels_path else None


def load_runner(model: str | os.PathLike) -> Runner:
    """Loads a run folder, ``.keras``, SavedModel folder, ``.tflite`` or ``.onnx`` file with its labels.

    Args:
        model: the model to load.
    """
    path = Path(model)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return SavedModelRunner(path, labels_for(path))
    resolved = resolve_model(path)
    target = resolved.model_path
    if target.suffix == ".tflite":
        return TFLiteRunner(target, labels_for(target))
    if target.suffix == ".onnx":
        beside = target.with_suffix(".labels.json")
        # Without a labels file beside it, the runner reads the embedded ones (one session, not two).
        return OnnxRunner(target, Labels.load(beside) if beside.is_file() else None)
    if target.suffix == ".keras":
        _, keras_model, labels = load_keras_with_labels(path, command="predict")
        return KerasRunner(target, labels, model=keras_model)
    raise UserError(
        f"{path}: not a model this tool reads. Expected a run folder, a .keras file, a SavedModel folder "
        f"(with saved_model.pb), a .tflite or an .onnx file"
    )


__all__ = [
    "ONNX_LABELS_METADATA",
    "TFLITE_LABELS_METADATA",
    "KerasRunner",
    "OnnxRunner",
    "Runner",
    "SavedModelRunner",
    "TFLiteRunner",
    "labels_for",
    "load_runner",
    "read_onnx_labels",
    "read_tflite_labels",
]
