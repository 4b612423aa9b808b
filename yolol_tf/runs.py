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
    best.json        the epoch (0-based) and monitored value that best.keras holds
    backup/          BackupAndRestore state while a run is unfinished
    fit.json         while unfinished: every epoch was trained, only the report is left

``labels.json`` is what travels with every export: evaluate, export and predict read it through
:func:`resolve_model`, which also accepts a bare ``.keras`` file (with a ``labels.json`` beside it, or
none: then classes are named ``class_0``... and thresholds are 0.5).

The lifecycle: :func:`run_dir_for` names the folder, :func:`check_run_dir` refuses to overwrite a
finished run or to restart an unfinished one without ``--resume``; while a run is unfinished ``backup/``
holds its fault-tolerance state (:func:`backup_epoch` reads how far it got), and ``metrics.json``,
written last, marks it finished.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolol_tf.config import atomic_write_text, read_yaml
from yolol_tf.errors import UserError

SAVED_MODELS = Path("saved_models")
LABELS_FILE = "labels.json"
CONFIG_FILE = "config.yaml"
BEST_MODEL = "best.keras"
LAST_MODEL = "last.keras"
HISTORY_FILE = "history.csv"
FINISHED_MARKER = "metrics.json"  # written last: its presence marks a finished run
BACKUP_DIR = "backup"  # fault-tolerance state of an unfinished run; removed once metrics.json exists
FIT_DONE = "fit.json"  # every epoch trained; a resume goes straight to the report
BEST_INFO = "best.json"  # the epoch and monitored value best.keras holds
HEAD_MODEL = "head.keras"  # two-phase fine-tuning: the model after the head-only phase
HEAD_BACKUP = "head"  # inside backup/: the head-only phase's own backup


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


def run_dir_for(config: Any, *, resume: bool = False) -> Path:
    """The run folder: ``config.out``, else ``saved_models/<model>-<name>``, else (resuming) the newest
    unfinished run of this model, else ``saved_models/<model>-<YYYYmmdd-HHMMSS>``.

    Args:
        config: the run's settings (``model``, ``out`` and ``name`` are read).
        resume: whether the run continues an unfinished one.
    """
    if config.out:
        return Path(config.out)
    if config.name:
        return SAVED_MODELS / f"{config.model}-{config.name}"
    if resume:
        unfinished = [
            d
            for d in SAVED_MODELS.glob(f"{config.model}-*")
            if d.is_dir() and not (d / FINISHED_MARKER).exists()
        ]
        if not unfinished:
            raise UserError(f"Nothing to resume: no unfinished {config.model} run in {SAVED_MODELS}/")
        return max(unfinished, key=lambda d: d.stat().st_mtime)
    return SAVED_MODELS / f"{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_run_dir(run_dir: Path, *, resume: bool) -> None:
    """Refuses to overwrite a finished run, or to restart an unfinished one without ``resume``."""
    if (run_dir / FINISHED_MARKER).exists():
        finish(run_dir)  # a run killed just after metrics.json may still hold its backup
        raise UserError(
            f"{run_dir} holds a finished run ({FINISHED_MARKER} exists); it is never retrained or "
            "overwritten. Pick another --name or --out."
        )
    exists = run_dir.is_dir() and any(run_dir.iterdir())
    if resume and not exists:
        raise UserError(f"Nothing to resume in {run_dir}: the folder is missing or empty")
    if not resume and exists:
        raise UserError(
            f"{run_dir} holds an unfinished run. Continue it with --resume, or pick another --name or --out."
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} is a file, not a folder")


def backup_epoch(backup: Path) -> int:
    """Epochs finished according to a backup folder (0 where there is none yet).

    Keras' ``BackupAndRestore`` keeps ``training_metadata.json``; the multi-worker loop's
    ``tf.train.CheckpointManager`` numbers its checkpoints by epochs finished (``ckpt-3``).
    """
    try:
        return int(json.loads((backup / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        found = re.search(r'^model_checkpoint_path: ".*-(\d+)"', (backup / "checkpoint").read_text(), re.M)
    except OSError:
        return 0
    return int(found.group(1)) if found else 0


def best_so_far(history_csv: Path, monitor: str) -> tuple[float | None, int | None]:
    """The best monitored value and its epoch in a resumed run's history, so far."""
    import pandas as pd

    if not history_csv.is_file():
        return None, None
    try:
        df = pd.read_csv(history_csv)
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return None, None
    if monitor not in df or df[monitor].dropna().empty:
        return None, None
    column = df[monitor]
    i = column.idxmin() if monitor.endswith("loss") else column.idxmax()
    return float(column[i]), int(df["epoch"][i])


def dedupe_history(history_csv: Path) -> None:
    """Keeps one row per epoch (the last): a kill between the CSV row and the backup repeats an epoch."""
    import pandas as pd

    if not history_csv.is_file():
        return
    df = pd.read_csv(history_csv)
    if "epoch" in df and df["epoch"].duplicated().any():
        df = df.drop_duplicates("epoch", keep="last").sort_values("epoch")
        atomic_write_text(history_csv, df.to_csv(index=False))


def _previous(path: Path) -> Path:
    """Where the best checkpoint before the current one waits: ``.best.prev.keras``."""
    return path.with_name(f".{path.stem}.prev{path.suffix}")


def retire_best(run_dir: Path) -> None:
    """Moves the current best checkpoint and its info aside before a better epoch replaces them.

    The better epoch is not committed (backed up) yet: if the run is killed before it is,
    :func:`rollback_best` puts the retired checkpoint back, so best.keras never holds an epoch that a
    resumed run trains again.
    """
    for name in (BEST_MODEL, BEST_INFO):
        if (run_dir / name).is_file():
            os.replace(run_dir / name, _previous(run_dir / name))


def record_best(run_dir: Path, epoch: int, value: float) -> None:
    """Writes best.json for a best.keras just saved (after the model, so the pair is complete)."""
    atomic_write_text(run_dir / BEST_INFO, json.dumps({"epoch": int(epoch), "value": float(value)}) + "\n")


def _best_info(path: Path) -> tuple[float | None, int | None]:
    """(value, epoch) recorded in a best.json-like file, or (None, None) where it is missing or unreadable."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return float(info["value"]), int(info["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


def read_best(run_dir: Path) -> tuple[float | None, int | None]:
    """(monitored value, 0-based epoch) of best.keras, or (None, None) where none is recorded."""
    return _best_info(run_dir / BEST_INFO)


def committed_best(run_dir: Path, committed: int) -> tuple[float | None, int | None]:
    """(value, epoch) of the best checkpoint among the ``committed`` epochs: best.json's, else the
    retired one's (what :func:`rollback_best` restores). Reads only, so every worker of a cluster can."""
    for info in (run_dir / BEST_INFO, _previous(run_dir / BEST_INFO)):
        value, epoch = _best_info(info)
        if epoch is not None and epoch < committed:
            return value, epoch
    return None, None


def rollback_best(run_dir: Path, committed: int) -> None:
    """Restores the retired best checkpoint where best.keras holds an epoch past the ``committed`` ones.

    Args:
        run_dir: the run folder.
        committed: epochs finished and backed up (a resumed run continues after them).
    """
    _, epoch = read_best(run_dir)
    if epoch is not None and epoch < committed:
        return
    for name in (BEST_MODEL, BEST_INFO):
        if _previous(run_dir / name).is_file():
            os.replace(_previous(run_dir / name), run_dir / name)
        elif epoch is not None or name == BEST_INFO:
            (run_dir / name).unlink(missing_ok=True)


def keep_committed_history(history_csv: Path, committed: int) -> None:
    """Drops history rows of epochs that were not backed up (a resumed run trains them again)."""
    import pandas as pd

    if not history_csv.is_file():
        return
    try:
        df = pd.read_csv(history_csv)
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return
    if "epoch" in df and (df["epoch"] >= committed).any():
        atomic_write_text(history_csv, df[df["epoch"] < committed].to_csv(index=False))


def finish(run_dir: Path) -> None:
    """Removes what only an unfinished run needs, once metrics.json marks it finished."""
    import shutil

    shutil.rmtree(run_dir / BACKUP_DIR, ignore_errors=True)
    for path in (
        run_dir / FIT_DONE,
        run_dir / HEAD_MODEL,
        _previous(run_dir / BEST_MODEL),
        _previous(run_dir / BEST_INFO),
    ):
        path.unlink(missing_ok=True)
