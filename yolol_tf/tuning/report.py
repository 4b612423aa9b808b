"""What a search leaves for people: ``trials.csv``, ``trials.png`` and ``best.yaml`` (see :mod:`yolol_tf.tuning.search`).

Everything is read from the oracle (the chief's, in a distributed search) and from each trial's
``stats.json`` that the worker which ran it wrote into the shared search folder.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import yaml

from yolol_tf import config as config_lib
from yolol_tf.models import pinned_defaults
from yolol_tf.models.spec import Param
from yolol_tf.tuning.config import data_values, recipe_values
from yolol_tf.tuning.space import train_values

# trials.csv column order after the hyperparameters; "epochs" is the number of epochs the trial ran.
FIGURES = (
    "score",
    "epochs",
    "seconds",
    "peak_memory_mb",
    "memory_start_mb",
    "memory_end_mb",
    "gpu_peak_memory_mb",
)
_RENAMED = {"epochs_run": "epochs"}


def _stats(project: Path, trial_id: str) -> dict[str, Any]:
    path = project / f"trial_{trial_id}" / "stats.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def trials_frame(oracle: Any, project: str | Path, space: tuple[Param, ...]) -> Any:
    """One row per trial: id, status, worker, every hyperparameter, score and the trial's figures.

    Args:
        oracle: a keras-tuner oracle (its trials).
        project: keras-tuner's project folder (for each trial's ``stats.json``).
        space: the search space, for the hyperparameter columns' order.
    """
    import pandas as pd

    rows = []
    for trial_id in sorted(oracle.trials, key=lambda t: (len(t), t)):
        trial = oracle.trials[trial_id]
        row: dict[str, Any] = {"trial_id": trial_id, "status": trial.status}
        stats = _stats(Path(project), trial_id)
        row["worker"] = stats.get("worker")
        row["pid"] = stats.get("pid")
        values = trial.hyperparameters.values
        row.update({p.name: values.get(p.name) for p in space})
        row.update({k: v for k, v in values.items() if k not in row})
        row["score"] = trial.score
        for name in trial.metrics.metrics:
            if name != oracle.objective.name:  # that is "score"
                row[_RENAMED.get(name, name)] = trial.metrics.get_last_value(name)
        # stats.json exists for failed trials too (their figures never reach the oracle).
        row.update({_RENAMED.get(k, k): v for k, v in stats.items() if k not in ("worker", "pid", "error")})
        error = stats.get("error") or (trial.message or "").strip().splitlines()[-1:] or [None]
        row["error"] = error if isinstance(error, str) else error[0]
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(
            columns=["trial_id", "status", "worker", "pid", *(p.name for p in space), *FIGURES, "error"]
        )
    for column in FIGURES:
        if column not in frame and column != "gpu_peak_memory_mb":
            frame[column] = math.nan
    first = ["trial_id", "status", "worker", "pid", *(p.name for p in space)]
    figures = [c for c in FIGURES if c in frame]
    rest = [c for c in frame.columns if c not in first and c not in figures and c != "error"]
    return frame[[*first, *rest, *figures, "error"]]


def plot_trials(frame: Any, path: Path, objective: str) -> None:
    """Score by trial: completed trials as dots, the best so far as a line, failed ones as red crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    x = np.arange(len(frame))
    score = frame["score"].astype(float).to_numpy() if len(frame) else np.array([])
    done = (frame["status"] == "COMPLETED").to_numpy() if len(frame) else np.array([], bool)
    ax.plot(x[done], score[done], "o", label="trial")
    if done.any():
        best = np.fmax.accumulate(np.where(done, score, np.nan))
        ax.step(x, best, where="post", label="best so far")
    failed = ~done & (frame["status"] != "RUNNING").to_numpy() if len(frame) else done
    if failed.any():
        floor = np.nanmin(score[done]) if done.any() else 0.0
        ax.plot(x[failed], np.full(failed.sum(), floor), "x", color="red", label="failed")
    ax.set_xticks(x, frame["trial_id"] if len(frame) else [])
    ax.set_xlabel("trial")
    ax.set_ylabel(objective)
    ax.set_title(f"{objective} by trial")
    ax.grid(alpha=0.3)
    if len(frame):
        ax.legend(loc="lower right")
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def best_config(oracle: Any, config: Any) -> tuple[dict[str, Any], Any] | None:
    """The best completed trial as ``TrainConfig`` settings (and the trial), or None if none completed."""
    completed = [t for t in oracle.trials.values() if t.status == "COMPLETED" and t.score is not None]
    if not completed:
        return None
    trial = max(completed, key=lambda t: -math.inf if math.isnan(t.score) else t.score)
    values = train_values(config.model, trial.hyperparameters.values)
    # The network the trials built, whatever the defaults become (as a run's config.yaml records it).
    values["model_options"] = {**values["model_options"], **pinned_defaults(config.model)}
    return {**values, **data_values(config), **recipe_values(config), "monitor": config.objective}, trial


def write_results(oracle: Any, out: Path, config: Any, space: tuple[Param, ...]) -> dict[str, Any] | None:
    """Writes trials.csv, trials.png and best.yaml into the search folder; returns the best settings.

    Args:
        oracle: the search's oracle.
        out: the search folder.
        config: the ``TuneConfig``.
        space: the search space.
    """
    frame = trials_frame(oracle, out / "keras_tuner", space)
    config_lib.atomic_write_text(out / "trials.csv", frame.to_csv(index=False))
    plot_trials(frame, out / "trials.png", config.objective)
    found = best_config(oracle, config)
    counts = frame["status"].value_counts().to_dict() if len(frame) else {}
    summary = ", ".join(f"{n} {s.lower()}" for s, n in counts.items()) or "no trials"
    if found is None:
        print(f"Search in {out}: {summary}; no trial completed, so no best.yaml", file=sys.stderr)
        return None
    best, trial = found
    header = (
        f"# Best of {len(frame)} trials of `yolol-tf tune {config.model}` ({config.objective} "
        f"{trial.score:.4f}, trial {trial.trial_id}).\n"
        f"# Train it in full: yolol-tf train {config.model} --config {out / 'best.yaml'} --epochs 30\n"
    )
    config_lib.atomic_write_text(out / "best.yaml", header + yaml.safe_dump(best, sort_keys=False))
    print(
        f"Search in {out}: {summary}; best {config.objective} {trial.score:.4f} (trial {trial.trial_id}); "
        f"trials.csv, trials.png, best.yaml written",
        file=sys.stderr,
    )
    return best
