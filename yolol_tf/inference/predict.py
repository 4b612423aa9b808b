"""Classify images, or the boxes of YOLO label files, with any model this tool writes.

A model is a run folder, a ``.keras`` file, a SavedModel folder or a ``.tflite`` file (float or int8);
:func:`load_runner` hides the difference behind :class:`Runner`, which takes raw uint8 pixels and returns
per-class probabilities. Each image (or box) is read and letterboxed exactly like the training crops
(``yolol_tf.data.read_image`` and ``letterbox``), so inference sees what training saw.

Example::

    from yolol_tf.inference.predict import predict, format_predictions
    preds = predict("saved_models/cnn-demo", ["photos/"])
    print(format_predictions(preds, "table"))
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from yolol_tf.errors import UserError
from yolol_tf.models.outputs import activate
from yolol_tf.runs import LABELS_FILE, Labels, resolve_model

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
TFLITE_LABELS_METADATA = "yolol_tf_labels"  # name of the JSON buffer export embeds in a .tflite


try:  # the data helpers' public names; their module path is the fallback while the package settles
    from yolol_tf.data import letterbox, read_image
except ImportError:  # pragma: no cover - depends on the data package's __init__
    from yolol_tf.data.images import letterbox, read_image


def _first_line(error: Exception) -> str:
    """``Type: first line of the message`` (clipped), for a UserError about a file that will not load."""
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:300]}"


class Runner:
    """A loaded model: raw pixels ``[B, S, S, 3]`` (0..255) in, probabilities ``[B, C]`` out.

    Attributes:
        labels: class names, thresholds, activation and input shape.
        kind: "keras", "savedmodel" or "tflite".
        path: the model file or folder.
    """

    kind = "model"

    def __init__(self, path: Path, labels: Labels):
        self.path = path
        self.labels = labels

    @property
    def size(self) -> int:
        return int(self.labels.input_shape[0])

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def load_keras(path: str | os.PathLike):
    """Loads a ``.keras`` model with this package's custom layers registered (see ``models.load_model``)."""
    from yolol_tf.models import load_model

    return load_model(path)


class KerasRunner(Runner):
    """A ``.keras`` model (logits out); the labels' activation is applied here."""

    kind = "keras"

    def __init__(self, path: Path, labels: Labels | None = None, model=None):
        import tensorflow as tf

        self.model = model if model is not None else load_keras(path)
        shape = tuple(int(d) for d in self.model.inputs[0].shape[1:])
        labels = labels or Labels.default(int(self.model.outputs[0].shape[-1]), shape)
        super().__init__(path, labels)
        # One traced graph for every batch size: eager calls cost more than small models themselves.
        spec = tf.TensorSpec((None, *shape), tf.float32)
        self._call = tf.function(lambda x: self.model(x, training=False), input_signature=[spec])

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        logits = self._call(np.asarray(pixels, np.float32)).numpy().astype(np.float64)
        return activate(logits, self.labels.activation).astype(np.float32)


class SavedModelRunner(Runner):
    """A SavedModel folder written by ``yolol-tf export``: its ``serve`` signature returns probabilities."""

    kind = "savedmodel"

    def __init__(self, path: Path, labels: Labels | None = None):
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

    def __init__(self, path: Path, labels: Labels | None = None):
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
        return self._in["dtype"] in (np.int8, np.uint8)

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


def _labels_for(path: Path) -> Labels | None:
    """A labels file beside or inside the model, else the one embedded in a .tflite, else None."""
    if path.suffix == ".tflite":
        beside = path.with_suffix(".labels.json")
        if beside.is_file():
            return Labels.load(beside)
        embedded = read_tflite_labels(path)
        if embedded is not None:
            return embedded
    resolved = resolve_model(path)
    return Labels.load(resolved.labels_path) if resolved.labels_path else None


def load_runner(model: str | os.PathLike) -> Runner:
    """Loads a run folder, ``.keras``, SavedModel folder or ``.tflite`` file with its labels.

    Args:
        model: the model to load.
    """
    path = Path(model)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return SavedModelRunner(path, _labels_for(path))
    resolved = resolve_model(path)
    target = resolved.model_path
    if target.suffix == ".tflite":
        return TFLiteRunner(target, _labels_for(target))
    if target.suffix == ".keras":
        labels = Labels.load(resolved.labels_path) if resolved.labels_path else None
        return KerasRunner(target, labels)
    raise UserError(
        f"{path}: not a model this tool reads. Expected a run folder, a .keras file, a SavedModel folder "
        f"(with saved_model.pb) or a .tflite file"
    )


@dataclass(frozen=True)
class Prediction:
    """One classified image or box.

    Attributes:
        image: the image file.
        box: 0-based line of the box in the image's label file; None when the whole image was classified.
        xyxy: the box in pixels (x1, y1, x2, y2); None for whole images.
        labels: (class name, probability) for classes at or above their threshold, most probable first.
        probabilities: every class's probability by name, in class order.
    """

    image: Path
    box: int | None
    xyxy: tuple[int, int, int, int] | None
    labels: list[tuple[str, float]]
    probabilities: dict[str, float] = field(repr=False)


def find_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Image files among ``paths``: files as given, folders searched recursively by extension.

    Args:
        paths: image files or folders.
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.is_file():
            found.append(p)
        else:
            raise UserError(f"No image or folder at {p}")
    return found


def read_boxes(label_file: Path, width: int, height: int) -> list[tuple[int, tuple[int, int, int, int]]]:
    """(line, pixel window) of each box in a YOLO label file, cut by training's crop rule with context 0.

    Lines are ``class cx cy w h`` or segmentation polygons (their bounding box); the class ids are not
    used, so label files of any class set work. Unsound lines are reported on stderr and skipped.

    Args:
        label_file: the ``.txt`` file.
        width: image width in pixels (after EXIF orientation).
        height: image height in pixels.
    """
    from yolol_tf.data.crops import plan_crops
    from yolol_tf.data.yolo import parse_labels

    boxes, problems = parse_labels(str(label_file), 1 << 30)
    for problem in problems:
        print(f"warning: skipped {problem}", file=sys.stderr)
    # min_box left at plan_crops' default, the one prepare and open_data use too: boxes too small to be
    # training crops are not classified either.
    samples, _ = plan_crops(boxes, width, height, context=0.0)
    return [(s.box, s.window) for s in samples]


def _label_file(image: Path, boxes_dir: Path, roots: Sequence[Path]) -> Path | None:
    """The label file of ``image``: same relative path under ``boxes_dir``, else same stem at its top."""
    for root in roots:
        try:
            rel = image.relative_to(root)
        except ValueError:
            continue
        candidate = (boxes_dir / rel).with_suffix(".txt")
        if candidate.is_file():
            return candidate
    candidate = boxes_dir / f"{image.stem}.txt"
    return candidate if candidate.is_file() else None


def predict(
    model: str | os.PathLike | Runner,
    paths: Sequence[str | os.PathLike],
    *,
    boxes: str | os.PathLike | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> list[Prediction]:
    """Classifies images whole, or box by box when YOLO label files are given.

    Unreadable images (and, with ``boxes``, images without a label file) are reported on stderr and
    skipped.

    Args:
        model: a run folder, ``.keras``, SavedModel folder, ``.tflite`` file or a loaded :class:`Runner`.
        paths: images or folders (searched recursively for jpg, jpeg, png, bmp, webp in any case).
        boxes: a folder of YOLO label files (``<image stem>.txt``, or mirroring the image folders).
        batch_size: crops per model call.
        progress: show a progress bar on stderr.

    Raises:
        UserError: a missing path, no images among ``paths``, or a model that cannot be loaded.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
    boxes_dir = Path(boxes) if boxes is not None else None
    if boxes_dir is not None and not boxes_dir.is_dir():
        raise UserError(f"--boxes must be a folder of YOLO label files. Received: {boxes_dir}")
    images = find_images(paths)
    if not images:  # checked before the model loads: an empty result would look like a success
        raise UserError(
            f"No images in {', '.join(str(p) for p in paths) or '(no paths given)'}: folders are searched "
            f"recursively for {', '.join(sorted(IMAGE_EXTENSIONS))} (any case)"
        )
    runner = model if isinstance(model, Runner) else load_runner(model)
    roots = [Path(p) for p in paths if Path(p).is_dir()]
    preds: list[Prediction] = []
    pending: list[tuple[Path, int | None, tuple | None, np.ndarray]] = []

    def flush() -> None:
        if pending:
            probs = runner(np.stack([crop for *_, crop in pending]))
            preds.extend(
                _prediction(runner.labels, *item[:3], p) for item, p in zip(pending, probs, strict=True)
            )
            pending.clear()

    for image_path in tqdm(images, desc="predict", unit="img", disable=not progress, file=sys.stderr):
        try:
            image = read_image(image_path)
        except UserError as e:
            print(f"warning: skipped {e.message}", file=sys.stderr)
            continue
        if boxes_dir is None:
            pending.append((image_path, None, None, _fit(image, runner)))
        else:
            label_file = _label_file(image_path, boxes_dir, roots)
            if label_file is None:
                print(f"warning: skipped {image_path}: no label file in {boxes_dir}", file=sys.stderr)
                continue
            for line, (x1, y1, x2, y2) in read_boxes(label_file, image.shape[1], image.shape[0]):
                crop = _fit(image[y1:y2, x1:x2], runner)
                pending.append((image_path, line, (x1, y1, x2, y2), crop))
        if len(pending) >= batch_size:
            flush()
    flush()
    return preds


def _fit(image: np.ndarray, runner: Runner) -> np.ndarray:
    """Letterboxed to the model's input; grey for one-channel models (Sign-MNIST)."""
    crop = letterbox(image, runner.size)
    if runner.labels.input_shape[-1] == 1:
        import cv2

        crop = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)[:, :, None]
    return crop


def _prediction(labels: Labels, image: Path, box, xyxy, probs: np.ndarray) -> Prediction:
    order = np.argsort(-probs, kind="stable")
    chosen = [(labels.names[i], float(probs[i])) for i in order if probs[i] >= labels.thresholds[i]]
    if not chosen and labels.activation == "softmax":
        # Single-label models always name a class: the most probable one.
        chosen = [(labels.names[order[0]], float(probs[order[0]]))]
    return Prediction(
        image, box, xyxy, chosen, {n: float(p) for n, p in zip(labels.names, probs, strict=True)}
    )


def format_predictions(preds: Sequence[Prediction], fmt: str = "table") -> str:
    """Predictions as a text table, JSON, or CSV (one column per class probability).

    Args:
        preds: what :func:`predict` returned.
        fmt: "table", "json" or "csv".
    """
    if fmt == "json":
        rows = [
            {
                "image": str(p.image),
                "box": p.box,
                "xyxy": list(p.xyxy) if p.xyxy else None,
                "labels": [{"name": n, "probability": round(s, 6)} for n, s in p.labels],
                "probabilities": {n: round(s, 6) for n, s in p.probabilities.items()},
            }
            for p in preds
        ]
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        names = list(preds[0].probabilities) if preds else []
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["image", "box", "x1", "y1", "x2", "y2", "labels", *names])
        for p in preds:
            xyxy = list(p.xyxy) if p.xyxy else ["", "", "", ""]
            labels = ";".join(n for n, _ in p.labels)
            writer.writerow(
                [
                    p.image,
                    "" if p.box is None else p.box,
                    *xyxy,
                    labels,
                    *(f"{s:.6f}" for s in p.probabilities.values()),
                ]
            )
        return out.getvalue()
    if fmt == "table":
        lines = []
        for p in preds:
            where = (
                str(p.image) if p.box is None else f"{p.image} [box {p.box}: {','.join(map(str, p.xyxy))}]"
            )
            found = ", ".join(f"{n} {s:.3f}" for n, s in p.labels) or "-"
            lines.append(f"{where}\t{found}")
        return "\n".join(lines) + ("\n" if lines else "")
    raise UserError(f"--format must be table, json or csv. Received: format={fmt!r}")


__all__ = [
    "IMAGE_EXTENSIONS",
    "LABELS_FILE",
    "KerasRunner",
    "Prediction",
    "Runner",
    "SavedModelRunner",
    "TFLiteRunner",
    "find_images",
    "load_keras",
    "format_predictions",
    "load_runner",
    "predict",
    "read_boxes",
    "read_tflite_labels",
]
