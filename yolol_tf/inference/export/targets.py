"""The kinds of export, one row each: file name, how it is built and loaded, where its labels go, its check.

:data:`TARGETS` is the one place that tells a SavedModel from a TFLite or ONNX file, and float32 from
float16 or int8. :func:`select_target` validates ``--format`` and ``--quantize`` against it; every later
step asks the chosen :class:`Target`.

    savedmodel      best.savedmodel/     labels inside           within 1e-4 of Keras     run's thresholds
    tflite          best.tflite          beside and embedded     within 1e-4 of Keras     run's thresholds
    tflite float16  best.float16.tflite  beside and embedded     at most --max-drop mAP   retuned
    tflite int8     best.int8.tflite     beside and embedded     at most --max-drop mAP   retuned; recovers
    onnx            best.onnx            beside and embedded     within 1e-4 of Keras     run's thresholds

"retuned": the per-class thresholds are tuned again on the export's own outputs on the check crops (an
int8 probability moves in steps of 1/256, so the run's thresholds, tuned on Keras' outputs, no longer
sit between the right scores). Float32 exports agree with Keras within 1e-4, so they keep the run's
thresholds, which were tuned on the whole validation split rather than on the check crops. "recovers":
an int8 export that loses too much keeps its worst layers in float (:mod:`.recovery`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from yolol_tf.errors import UserError
from yolol_tf.inference.export import onnx as onnx_export
from yolol_tf.inference.export import tflite
from yolol_tf.inference.export.files import make_parent, write_labels
from yolol_tf.inference.export.savedmodel import write_savedmodel
from yolol_tf.inference.runners import OnnxRunner, Runner, SavedModelRunner, TFLiteRunner
from yolol_tf.runs import Labels

if TYPE_CHECKING:
    import keras
    import numpy as np

FORMATS = ("savedmodel", "tflite", "onnx")
QUANTIZE = ("none", "float16", "int8")
FLOAT_TOLERANCE = 1e-4  # max |probability difference| a float32 export may show against Keras


@dataclass(frozen=True)
class Target:
    """One kind of export.

    Attributes:
        format: "savedmodel", "tflite" or "onnx".
        quantize: "none", "float16" or "int8".
        suffix: what follows the model's stem in the default name (``best`` + ``.int8.tflite``).
        tolerance: the largest probability difference from Keras a float32 export may show; None for a
            quantised one, which is judged by its mAP drop instead and so needs labelled crops.
        calibrate: built from calibration crops (int8).
        retune: its thresholds are tuned again on its own outputs on the check crops.
        recoverable: when it loses too much, selective quantisation may keep some layers in float.
        float32_only: built from (and checked against) a float32 copy of a mixed-precision model.
    """

    format: str
    quantize: str
    suffix: str
    tolerance: float | None = FLOAT_TOLERANCE
    calibrate: bool = False
    retune: bool = False
    recoverable: bool = False
    float32_only: bool = False

    @property
    def name(self) -> str:
        """``tflite int8``, ``onnx``: how summaries name it."""
        return self.format if self.quantize == "none" else f"{self.format} {self.quantize}"

    def require(self) -> None:
        """Refuses an export whose optional packages are missing, before any work."""

    def default_destination(self, model_path: Path) -> Path:
        """Beside the ``.keras`` file: ``best.tflite``, ``best.int8.tflite``, ``best.savedmodel/``."""
        return model_path.with_name(f"{model_path.stem}{self.suffix}")

    def destination(self, model_path: Path, out: str | os.PathLike | None) -> Path:
        """``out``, or the default beside the model; checked before any work (see :meth:`check`)."""
        dest = Path(out) if out is not None else self.default_destination(model_path)
        self.check(dest)
        return dest

    def check(self, dest: Path) -> None:
        """Refuses a destination the finished export could not be moved to."""
        make_parent(dest)

    def build(self, model: keras.Model, labels: Labels, work: Path, calibration: np.ndarray | None) -> Path:
        """Writes the export into the work folder and returns it (labels are attached once checked)."""
        raise NotImplementedError

    def load(self, built: Path, labels: Labels) -> Runner:
        """The export as a runner, to check it as it will run."""
        raise NotImplementedError

    def attach_labels(self, built: Path, labels: Labels) -> None:
        """Puts the export's final labels inside it (file metadata, or files in its folder)."""
        raise NotImplementedError

    def write_labels(self, labels: Labels, dest: Path) -> Path:
        """Puts the labels files where they travel with the export at ``dest``; returns the JSON one."""
        raise NotImplementedError


def _write_labels_beside(labels: Labels, dest: Path) -> Path:
    """``m.int8.tflite`` -> ``m.int8.labels.json``, ``m.int8.labels.txt`` (what predict looks for)."""
    json_path = dest.with_suffix(".labels.json")
    write_labels(labels, json_path, dest.with_suffix(".labels.txt"))
    return json_path


@dataclass(frozen=True)
class FileTarget(Target):
    """A single-file export (``.tflite``, ``.onnx``), its labels embedded and beside it."""

    def destination(self, model_path: Path, out: str | os.PathLike | None) -> Path:
        dest = Path(out) if out is not None else self.default_destination(model_path)
        if dest.is_dir():  # --out FOLDER: the default file name inside it
            dest = dest / self.default_destination(model_path).name
        return super().destination(model_path, dest)

    def write_labels(self, labels: Labels, dest: Path) -> Path:
        return _write_labels_beside(labels, dest)


@dataclass(frozen=True)
class SavedModelTarget(Target):
    """A SavedModel folder for TensorFlow Serving, its labels inside it."""

    def check(self, dest: Path) -> None:
        """Refuses a file, or a folder of the user's that is not a SavedModel (it would be replaced)."""
        if dest.exists():
            if not dest.is_dir():
                raise UserError(f"--out {dest} is a file; a SavedModel is a folder. Choose a folder name")
            if any(dest.iterdir()) and not (dest / "saved_model.pb").is_file():
                raise UserError(
                    f"--out {dest} is a folder that holds something other than a SavedModel and would be "
                    "replaced; choose a new folder name"
                )
        super().check(dest)

    def build(self, model: keras.Model, labels: Labels, work: Path, calibration: np.ndarray | None) -> Path:
        folder = work / "savedmodel"
        write_savedmodel(model, labels, folder)
        return folder

    def load(self, built: Path, labels: Labels) -> Runner:
        return SavedModelRunner(built, labels)

    def attach_labels(self, built: Path, labels: Labels) -> None:
        write_labels(labels, built / "labels.json", built / "labels.txt")

    def write_labels(self, labels: Labels, dest: Path) -> Path:
        return dest / "labels.json"  # inside the folder (attach_labels)


@dataclass(frozen=True)
class TFLiteTarget(FileTarget):
    """A ``.tflite`` file for phones, its labels embedded and beside it (``best.int8.labels.json``).

    The SavedModel it is converted from stays in the work folder (``savedmodel/``), where the int8
    recovery converts it again.

    Attributes:
        settings: the converter settings of its precision (see :mod:`yolol_tf.inference.export.tflite`).
    """

    settings: tflite.ConverterSettings = tflite.float32_settings

    def build(self, model: keras.Model, labels: Labels, work: Path, calibration: np.ndarray | None) -> Path:
        savedmodel, built = work / "savedmodel", work / "model.tflite"
        write_savedmodel(model, labels, savedmodel)
        built.write_bytes(tflite.convert_tflite(savedmodel, self.quantize, self.settings, calibration))
        return built

    def load(self, built: Path, labels: Labels) -> Runner:
        return TFLiteRunner(built, labels)

    def attach_labels(self, built: Path, labels: Labels) -> None:
        built.write_bytes(tflite.embed_labels(built.read_bytes(), labels))


@dataclass(frozen=True)
class OnnxTarget(FileTarget):
    """An ``.onnx`` file for onnxruntime, its labels in its ``metadata_props`` and beside it."""

    def require(self) -> None:
        onnx_export.require()

    def build(self, model: keras.Model, labels: Labels, work: Path, calibration: np.ndarray | None) -> Path:
        built = work / "model.onnx"
        onnx_export.write_onnx(model, labels, built)
        return built

    def load(self, built: Path, labels: Labels) -> Runner:
        return OnnxRunner(built, labels)

    def attach_labels(self, built: Path, labels: Labels) -> None:
        onnx_export.embed_labels(built, labels)


TARGETS: dict[tuple[str, str], Target] = {
    (t.format, t.quantize): t
    for t in (
        SavedModelTarget("savedmodel", "none", ".savedmodel"),
        TFLiteTarget("tflite", "none", ".tflite"),
        TFLiteTarget(
            "tflite", "float16", ".float16.tflite", None, retune=True, settings=tflite.float16_settings
        ),
        TFLiteTarget(
            "tflite",
            "int8",
            ".int8.tflite",
            None,
            calibrate=True,
            retune=True,
            recoverable=True,
            settings=tflite.int8_settings,
        ),
        OnnxTarget("onnx", "none", ".onnx", float32_only=True),
    )
}


def select_target(format: str, quantize: str) -> Target:
    """The export kind for ``--format`` and ``--quantize``.

    Raises:
        UserError: an unknown format or precision, or a precision the format does not take.
    """
    if format not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}. Received: format={format!r}")
    if quantize not in QUANTIZE:
        raise UserError(f"--quantize must be one of {', '.join(QUANTIZE)}. Received: quantize={quantize!r}")
    if (format, quantize) not in TARGETS:
        raise UserError(f"--quantize applies to --format tflite only. Received: quantize={quantize!r}")
    return TARGETS[(format, quantize)]


def default_destination(model_path: Path, format: str, quantize: str) -> Path:
    """``best.tflite``, ``best.int8.tflite``, ``best.onnx``, ``best.savedmodel/`` beside the ``.keras`` file."""
    return select_target(format, quantize).default_destination(model_path)
