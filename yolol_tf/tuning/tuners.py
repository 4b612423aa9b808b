"""keras-tuner's Tuner classes as a search uses them: per-trial time and memory, cleanup, and a stop after
``trials_per_process`` trials or ``max_failures`` failures in a row.

Each trial's figures go to ``stats.json`` in its trial folder (:data:`STATS_FILE`), for trials.csv.
"""

from __future__ import annotations

import gc
import json
import os
import time
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
from keras_tuner.src.engine import conditions, tuner_utils

from yolol_tf import config as config_lib
from yolol_tf.tuning.cluster import stop_if_failing
from yolol_tf.tuning.config import TuneConfig
from yolol_tf.tuning.memory import MemorySampler

# keras-tuner 1.4.8 left a debug print() in conditions.Parent.to_proto, which runs for every conditional
# parameter of every trial sent between chief and workers; shadow it in that module only.
conditions.print = lambda *args, **kwargs: None

PROJECT = "keras_tuner"
STATS_FILE = "stats.json"


class ProcessDone(Exception):
    """Raised between trials when this process ran its ``trials_per_process``."""


class _Tracked:
    """Mixed into a keras-tuner Tuner: per-trial time and memory, cleanup, and a quieter worker loop."""

    max_failures = 0
    trials_limit = 0
    _ran = 0

    def _populate_initial_space(self) -> None:
        # keras-tuner builds the model (several times, to find conditional parameters) just to learn
        # the space; ours declares every parameter and its conditions without building anything.
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def pre_create_trial(self) -> None:
        # An oracle waiting on other workers answers IDLE and keras-tuner asks again at once: pause.
        if getattr(self, "_asked", False):
            time.sleep(0.5)
        self._asked = True
        if self.trials_limit and self._ran >= self.trials_limit:
            local = isinstance(self.oracle, kt.Oracle)
            if not local or self.oracle.remaining_trials() is None or self.oracle.remaining_trials() > 0:
                raise ProcessDone()

    def on_trial_begin(self, trial: Any) -> None:
        self._asked = False
        super().on_trial_begin(trial)

    def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        stats: dict[str, Any] = {"worker": self.tuner_id, "pid": os.getpid()}
        start = time.perf_counter()
        memory = MemorySampler()
        try:
            with memory:
                results = super().run_trial(trial, *args, **kwargs)
            metrics = tuner_utils.convert_to_metrics_dict(results, self.oracle.objective)
            stats["epochs_run"] = metrics.get("epochs_run")
        except Exception as e:
            stats["error"] = f"{type(e).__name__}: {e}"[:500]
            raise
        finally:
            stats.update(memory.figures, seconds=round(time.perf_counter() - start, 2))
            path = Path(self.get_trial_dir(trial.trial_id)) / STATS_FILE
            config_lib.atomic_write_text(path, json.dumps(stats, indent=1))
        figures = {k: v for k, v in stats.items() if isinstance(v, (int, float)) and k != "pid"}
        return {**{k: float(v) for k, v in metrics.items()}, **figures}

    def on_trial_end(self, trial: Any) -> None:
        super().on_trial_end(trial)
        self._ran += 1
        # keras-tuner clears the session before each build; clearing after each trial as well frees the
        # last model's memory before the next trial's data pipeline starts.
        keras.backend.clear_session()
        gc.collect()
        if isinstance(self.oracle, kt.Oracle):
            stop_if_failing(self.oracle, self.max_failures)


class RandomTuner(_Tracked, kt.RandomSearch):
    """Random search with per-trial statistics."""


class BayesianTuner(_Tracked, kt.BayesianOptimization):
    """Gaussian-process Bayesian optimisation with per-trial statistics."""


class HyperbandTuner(_Tracked, kt.Hyperband):
    """Hyperband with per-trial statistics."""


def make_tuner(config: TuneConfig, hypermodel: kt.HyperModel, out: Path, *, overwrite: bool) -> kt.Tuner:
    """The keras-tuner Tuner for ``config.tuner``, its project in ``out/keras_tuner``."""
    common = dict(
        hypermodel=hypermodel,
        objective=kt.Objective(config.objective, direction="max"),
        seed=config.seed,
        directory=str(out),
        project_name=PROJECT,
        overwrite=overwrite,
        max_retries_per_trial=config.retries,
        # Our own check (stop_if_failing) stops the search cleanly, on the chief too; keras-tuner's
        # raises inside the oracle, which on a chief leaves the worker's trial hanging.
        max_consecutive_failed_trials=None,
    )
    if config.tuner == "hyperband":
        tuner = HyperbandTuner(max_epochs=config.epochs, factor=3, hyperband_iterations=1, **common)
        tuner.oracle.max_trials = config.max_trials
    elif config.tuner == "bayesian":
        tuner = BayesianTuner(max_trials=config.max_trials, **common)
    else:
        tuner = RandomTuner(max_trials=config.max_trials, **common)
    tuner.max_failures = config.max_failures
    tuner.trials_limit = config.trials_per_process or 0
    return tuner
