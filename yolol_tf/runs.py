"""The run folder that training leaves, and how other commands find a model and its labels in it.

A run folder (``saved_models/<model>-<name>/``) holds::

    config.yaml      the resolved training config (repeat a run with ``--config`` on it)
    best.keras       the best epoch by the monitored validation metric
    last.keras       the last finished epoch
    labels.json      class names, per-class thresholds, output activation, input shape
    history.csv      one row per epoch
    metrics.json     evaluation figures on the validation (and test) split
    logs/            TensorBoard event files
    plots/           curves, per-class F1 and a grid of validation crops (PNG)
    backup/          BackupAndRestore state while a run is unfinished

``labels.json`` is what travels with every export: evaluate, export and predict read it through
:func:`resolve_model`, which also accepts a bare ``.keras`` file (with a ``labels.json`` beside it, or
none: then classes are named ``class_0``... and thresholds are 0.5).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolol_tf.config import atomic_write_text, read_yaml
from yolol_tf.errors import UserError

LABELS_FILE = "labels.json"
CONFIG_FILE = "config.yaml"
BEST_MODEL = "best.keras"
LAST_MODEL = "last.keras"


@dataclass(frozen=True)
class Labels:
    """What a model's outputs mean.

    Args:
        names: class names, index = output unit.
        thresholds: per-class decision thresholds on probabilities.
        activation: "sigmoid" (multi-label) or "softmax" (single-label, e.g. Sign-MNIST).
        input_shape: (height, width, channels) of the raw-pixel input.
    """

    names: list[str]
    thresholds: list[float]
    activation: str = "sigmoid"
    input_shape: tuple[int, int, int] = (64, 64, 3)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The labels as JSON-ready data: the schema of ``labels.json`` and of the TFLite metadata."""
        return {
            "names": list(self.names),
            "thresholds": [float(t) for t in self.thresholds],
            "activation": self.activation,
            "input_shape": list(self.input_shape),
            **self.extra,
        }

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Labels:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path}: not a valid labels file ({e})") from None

    @classmethod
    def from_dict(cls, data: dict) -> Labels:
        """Labels from :meth:`to_dict`'s data.

        Raises:
            ValueError, KeyError, TypeError: ``data`` is not labels data.
        """
        data = dict(data)
        names = [str(n) for n in data.pop("names")]
        thresholds = [float(t) for t in data.pop("thresholds", [0.5] * len(names))]
        activation = data.pop("activation", "sigmoid")
        input_shape = tuple(int(d) for d in data.pop("input_shape"))
        if len(thresholds) != len(names):
            raise ValueError(f"{len(names)} names but {len(thresholds)} thresholds; they must match")
        return cls(names, thresholds, activation, input_shape, extra=data)

    @classmethod
    def default(cls, num_classes: int, input_shape: tuple[int, int, int]) -> Labels:
        return cls([f"class_{i}" for i in range(num_classes)], [0.5] * num_classes, "sigmoid", input_shape)


@dataclass(frozen=True)
class ResolvedModel:
    """A model file and its labels, found from a run folder or a model path."""

    model_path: Path
    labels_path: Path | None
    run_dir: Path | None


def resolve_model(path: str | os.PathLike, *, prefer: str = BEST_MODEL) -> ResolvedModel:
    """Finds the model file and ``labels.json`` for RUN|MODEL arguments.

    Args:
        path: a run folder, a ``.keras`` file, a SavedModel folder or a ``.tflite`` file.
        prefer: which model file of a run folder to use (``best.keras`` or ``last.keras``).
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"No run folder or model file at {path}")
    if path.is_dir() and (path / prefer).is_file():
        labels = path / LABELS_FILE
        return ResolvedModel(path / prefer, labels if labels.is_file() else None, path)
    if path.is_dir() and not (path / "saved_model.pb").is_file():
        raise UserError(
            f"{path} is a folder but neither a run folder (no {prefer}) nor a SavedModel (no saved_model.pb)"
        )
    for candidate in (path.parent / LABELS_FILE, path.with_suffix(".labels.json"), path / LABELS_FILE):
        if candidate.is_file():
            return ResolvedModel(path, candidate, None)
    return ResolvedModel(path, None, None)


def read_run_config(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """A run folder's ``config.yaml`` as a mapping, or None when the folder has none.

    Args:
        run_dir: the run folder.

    Raises:
        UserError: the file is not valid YAML.
    """
    path = Path(run_dir) / CONFIG_FILE
    return read_yaml(path) if path.is_file() else None
