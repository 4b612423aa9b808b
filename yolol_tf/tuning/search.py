"""Hyperparameter search with keras-tuner: ``yolol-tf tune MODEL``, on one machine or many.

A trial samples values from the model's search space (:mod:`yolol_tf.tuning.space`), turns them into a
``TrainConfig`` and builds, compiles and fits with the same ``build_model`` and ``compile_model`` that
``yolol-tf train`` uses; its score is the best validation mAP (``val_map``, from ``MAPCallback``) or macro
F1 (``val_f1_macro``) over its epochs, always maximised. The search folder holds::

    keras_tuner/   keras-tuner's project: oracle.json, trial_*/trial.json (+ stats.json, checkpoints)
    search.yaml    the search's settings and space (a rerun must match them to continue the search)
    trials.csv     one row per trial: id, status, worker, hyperparameters, score, epochs, seconds, memory
    trials.png     score by trial, failed trials marked, the best so far as a line
    best.yaml      the best trial as an experiments YAML: ``yolol-tf train --config best.yaml``
    best/          with ``train_best``: the best configuration trained in full (a run folder)

Running the same search again continues it (finished trials are never rerun; an interrupted one is);
``overwrite`` starts afresh. A trial that raises (bad hyperparameters, out of memory) is recorded FAILED
and the search goes on, unless ``max_failures`` trials in a row fail.

Distributed: one process runs the oracle (``chief="HOST:PORT"``), any number of workers
(``worker="HOST:PORT"``) ask it for trials, train and report back; they share the search folder (needed
for Hyperband, which resumes a trial from another's checkpoint, and for per-trial memory figures of failed
trials). This drives keras-tuner's own chief/worker mode (the ``KERASTUNER_*`` environment variables).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
from keras_tuner.src.engine import conditions, tuner_utils

from yolol_tf import config as config_lib
from yolol_tf import runs
from yolol_tf.errors import UserError
from yolol_tf.tuning.cluster import consecutive_failures, environment, role_of, serve, stop_if_failing
from yolol_tf.tuning.report import write_results
from yolol_tf.tuning.space import Param, load_space, space_to_dict, train_values

# keras-tuner 1.4.8 left a debug print() in conditions.Parent.to_proto, which runs for every conditional
# parameter of every trial sent between chief and workers; shadow it in that module only.
conditions.print = lambda *args, **kwargs: None

TUNERS = ("random", "hyperband", "bayesian")
OBJECTIVES = ("val_map", "val_f1_macro")
PROJECT = "keras_tuner"
STATS_FILE = "stats.json"
_CHILD_ENV = "YOLOL_TF_TUNE_CHILD"
_MORE_TRIALS = 75  # a child's exit status: it ran its share of trials, the search goes on


class _ProcessDone(Exception):
    """Raised between trials when this process ran its ``trials_per_process``."""


@dataclass(frozen=True)
class TuneConfig:
    """Settings of one search.

    Args:
        model: "dense", "cnn" or "resnet50".
        data: as ``TrainConfig.data`` (None = the demo dataset).
        val: as ``TrainConfig.val``.
        size: crop side in pixels.
        tuner: "random", "hyperband" or "bayesian".
        max_trials: trials in all (a rerun with more runs only the new ones; caps Hyperband too).
        epochs: epochs per trial (Hyperband: the most any trial gets).
        objective: "val_map" or "val_f1_macro" (macro F1 at threshold 0.5), maximised.
        space: a YAML file narrowing or fixing parts of the search space.
        batch_size: fixes the batch size (else it is searched).
        steps_per_epoch: steps per epoch; default one pass over the training split.
        out: the search folder; default ``saved_models/tune-<model>-<time>``.
        overwrite: delete an earlier search in ``out`` and start afresh.
        train_best: after the search, train the best configuration in full into ``out/best``.
        train_epochs: epochs of that full training (default ``TrainConfig``'s).
        chief: "HOST:PORT": run the oracle there and hand out trials to workers.
        worker: "HOST:PORT" of the chief: this process runs trials it hands out.
        worker_id: this worker's name (default hostname-pid); reuse it to resume a killed worker's trial.
        seed: seeds the oracle, weights and shuffling.
        max_failures: stop after this many failed trials in a row.
        retries: reruns of a failed trial before it counts as FAILED.
        trials_per_process: run the trials in fresh child processes of at most this many trials each
            (needs ``data``, not an open ``source``). TensorFlow keeps some memory of every model a
            process trained, even after ``clear_session`` (tensorflow#61791); a new process starts clean.
        verbose: Keras fit verbosity.
    """

    model: str = "cnn"
    data: str | None = None
    val: str | None = None
    size: int = 64
    tuner: str = "random"
    max_trials: int = 10
    epochs: int = 3
    objective: str = "val_map"
    space: str | None = None
    batch_size: int | None = None
    steps_per_epoch: int | None = None
    out: str | None = None
    overwrite: bool = False
    train_best: bool = False
    train_epochs: int | None = None
    chief: str | None = None
    worker: str | None = None
    worker_id: str | None = None
    seed: int = 0
    max_failures: int = 3
    retries: int = 0
    trials_per_process: int | None = None
    verbose: int = 2


def declare(hp: kt.HyperParameters, param: Param) -> Any:
    """Declares ``param`` on ``hp`` (inside its conditional scope) and returns its value for this trial."""

    def make() -> Any:
        if param.kind == "fixed":
            return hp.Fixed(param.name, param.values[0])
        if param.kind == "choice":
            return hp.Choice(param.name, list(param.values))
        sampling = "log" if param.log else "linear"
        if param.kind == "int":
            return hp.Int(param.name, int(param.low), int(param.high), step=int(param.step or 1), sampling=sampling)
        return hp.Float(param.name, param.low, param.high, step=param.step, sampling=sampling)

    if param.when is None:
        return make()
    with hp.conditional_scope(param.when[0], list(param.when[1])):
        return make()


class SearchHyperModel(kt.HyperModel):
    """Samples a space and trains with the project's own builders, compile and data pipeline.

    Args:
        config: the search's settings.
        space: the (narrowed) search space.
        source: the data (a ``yolol_tf.data.DataSource``); None on the chief, which trains nothing.
        jit: XLA on/off for ``compile_model``.
    """

    def __init__(self, config: TuneConfig, space: tuple[Param, ...], source: Any = None, jit: bool | str = "auto"):
        super().__init__(name=config.model)
        self.config = config
        self.space = space
        self.source = source
        self.jit = jit
        self._class_freq = None

    def declare_hyperparameters(self, hp: kt.HyperParameters) -> None:
        for param in self.space:
            declare(hp, param)

    def train_config(self, hp: kt.HyperParameters) -> Any:
        """The ``TrainConfig`` of this trial's values (the same settings ``best.yaml`` gets)."""
        from yolol_tf.training import TrainConfig, effective_loss

        values = train_values(self.config.model, {p.name: declare(hp, p) for p in self.space})
        c = self.config
        train_config = TrainConfig(**values, data=c.data, val=c.val, size=c.size, epochs=c.epochs,
                                   seed=c.seed, steps_per_epoch=c.steps_per_epoch, monitor=c.objective)
        return dataclasses.replace(train_config, loss=effective_loss(train_config, self.source.info))

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        from yolol_tf.models import build_model
        from yolol_tf.training import class_frequency, compile_model

        config = self.train_config(hp)
        info = self.source.info
        if config.loss == "weighted_bce" and self._class_freq is None:
            self._class_freq = class_frequency(self.source, info)
        keras.utils.set_random_seed(config.seed)
        model = build_model(config.model, info.image_shape, info.num_classes, **config.model_options)
        return compile_model(model, config, info, self._class_freq, steps_per_epoch=self._steps(config),
                             jit_compile=self.jit)

    def _steps(self, config: Any) -> int:
        return config.steps_per_epoch or max(1, math.ceil(self.source.info.counts.get("train", 1) / config.batch_size))

    def fit(self, hp: kt.HyperParameters, model: keras.Model, *args: Any, callbacks: list | None = None,
            epochs: int | None = None, initial_epoch: int = 0, verbose: Any = 2, **kwargs: Any) -> dict[str, float]:
        """Fits one trial; returns its figures at the best epoch and how many epochs ran."""
        from yolol_tf.training.callbacks import MAPCallback

        config = self.train_config(hp)
        objective = self.config.objective
        train_ds = self.source.dataset("train", config.batch_size, training=True, augment=config.augment,
                                       seed=config.seed, repeat=True)
        val_ds = self.source.dataset("val", config.batch_size)
        activation = "softmax" if config.loss == "cce" else "sigmoid"
        # MAPCallback first: keras-tuner's checkpoint callback must see val_map in the logs.
        history = model.fit(
            train_ds, epochs=epochs or config.epochs, initial_epoch=initial_epoch,
            steps_per_epoch=self._steps(config), callbacks=[MAPCallback(val_ds, activation), *(callbacks or [])],
            # Keras' own validation pass is only needed for its F1 metric; mAP comes from MAPCallback.
            validation_data=val_ds if objective != "val_map" else None, verbose=verbose, shuffle=False,
        )
        scores = history.history.get(objective)
        if not scores:
            raise kt.errors.FailedTrialError(
                f"objective {objective!r} is not in the logs ({', '.join(history.history)}); "
                "val_f1_macro needs multi-label data"
            )
        best = max(range(len(scores)), key=lambda i: -math.inf if math.isnan(scores[i]) else scores[i])
        figures = {k: float(v[best]) for k, v in history.history.items() if k.startswith("val_")}
        return {**figures, "epochs_run": float(len(scores))}


class MemorySampler:
    """Peak resident memory of this process over a block, sampled by a thread.

    ``ru_maxrss`` is the peak of the whole process life, so it cannot show one trial's peak; VmRSS from
    ``/proc/self/status`` can (Linux). Elsewhere the figures fall back to ``ru_maxrss``. On a GPU the
    device's own peak is read from TensorFlow.
    """

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.figures: dict[str, float] = {}
        self._stop = threading.Event()
        self._peak = 0.0
        self._gpu = False

    @staticmethod
    def rss_mb() -> float:
        try:
            with open("/proc/self/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, self.rss_mb())

    def __enter__(self) -> MemorySampler:
        import tensorflow as tf

        self._gpu = bool(tf.config.list_physical_devices("GPU"))
        if self._gpu:
            tf.config.experimental.reset_memory_stats("GPU:0")
        self.figures["memory_start_mb"] = self._peak = self.rss_mb()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        import tensorflow as tf

        self._stop.set()
        self._thread.join()
        end = self.rss_mb()
        self.figures.update(peak_memory_mb=max(self._peak, end), memory_end_mb=end)
        if self._gpu:
            self.figures["gpu_peak_memory_mb"] = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
        self.figures = {k: round(v, 1) for k, v in self.figures.items()}


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
                raise _ProcessDone()

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


def make_tuner(config: TuneConfig, hypermodel: SearchHyperModel, out: Path, *, overwrite: bool) -> kt.Tuner:
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


def search_dir(config: TuneConfig, role: str) -> Path:
    if config.out:
        return Path(config.out)
    if role != "single":
        raise UserError("--chief and --worker need --out: the search folder every process shares")
    return Path("saved_models") / f"tune-{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"


def _validate(config: TuneConfig) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise UserError(message)

    need(config.tuner in TUNERS, f"--tuner must be one of {', '.join(TUNERS)}. Received: {config.tuner!r}")
    need(config.objective in OBJECTIVES, f"--objective must be one of {', '.join(OBJECTIVES)}. Received: {config.objective!r}")
    need(config.max_trials >= 1, f"--max-trials must be >= 1. Received: {config.max_trials}")
    need(config.epochs >= 1, f"--epochs must be >= 1. Received: {config.epochs}")
    need(config.max_failures >= 1, f"max_failures must be >= 1. Received: {config.max_failures}")
    need(config.trials_per_process is None or config.trials_per_process >= 1,
         f"--trials-per-process must be >= 1. Received: {config.trials_per_process}")
    need(not (config.worker and config.overwrite), "--overwrite is for the chief only: a worker would delete the shared search")


def _check_same_search(out: Path, settings: dict[str, Any], overwrite: bool) -> None:
    """A rerun continues a search only if it is the same search; else it would mix two in one oracle."""
    path = out / "search.yaml"
    if overwrite:
        # keras-tuner deletes its project; the old search's reports must not outlive it.
        for name in ("trials.csv", "trials.png", "best.yaml"):
            (out / name).unlink(missing_ok=True)
    if overwrite or not (out / PROJECT / "oracle.json").is_file() or not path.is_file():
        config_lib.write_yaml(path, settings)
        return
    before = config_lib.read_yaml(path)
    changed = sorted(k for k in settings if before.get(k) != settings[k])
    if changed:
        raise UserError(
            f"{out} holds a different search ({', '.join(changed)} changed; see {path}). "
            "Continue it with the same settings, start afresh with --overwrite, or pick another --out."
        )


def tune(config: TuneConfig, *, source: Any = None) -> Path:
    """Runs (or continues, or serves, or works on) a search and returns the search folder.

    Args:
        config: the search's settings.
        source: the data, if already open (a ``yolol_tf.data.DataSource``); default ``open_data(config.data)``.
    """
    _validate(config)
    role, _ = role_of(config)
    if config.trials_per_process and role != "chief" and os.environ.get(_CHILD_ENV) != "1":
        if source is not None:
            raise UserError("trials_per_process runs trials in new processes: give data, not an open source")
        return _run_in_processes(config, role)
    return _search(config, source)[0]


def _run_in_processes(config: TuneConfig, role: str) -> Path:
    """Runs the search as a chain of child processes of ``trials_per_process`` trials each."""
    import subprocess
    import sys

    # Fixed here so every child continues the same folder and, as a worker, the same tuner id (a child
    # killed mid-trial leaves its trial to the next child under that id).
    worker_id = config.worker_id or (f"{socket.gethostname()}-{os.getpid()}" if role == "worker" else None)
    child = dataclasses.replace(config, out=str(search_dir(config, role)), worker_id=worker_id)
    code = "from yolol_tf.tuning.search import child_main; child_main()"
    while True:
        status = subprocess.call([sys.executable, "-c", code, json.dumps(dataclasses.asdict(child))],
                                 env={**os.environ, _CHILD_ENV: "1"})
        if status == 0:
            return Path(child.out)
        if status != _MORE_TRIALS:
            raise UserError(f"A search process ended with exit status {status} (see its messages above)", exit_code=1)
        child = dataclasses.replace(child, overwrite=False)


def child_main() -> None:
    """Entry point of a child process of :func:`_run_in_processes` (the config as JSON in argv[1])."""
    import sys

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        finished = _search(TuneConfig(**json.loads(sys.argv[1])), None)[1]
    except UserError as e:
        print(f"error: {e.message}", file=sys.stderr)
        sys.exit(e.exit_code)
    sys.exit(0 if finished else _MORE_TRIALS)


def _search(config: TuneConfig, source: Any) -> tuple[Path, bool]:
    """The search in this process; returns the folder and whether the search is finished."""
    from yolol_tf import device

    role, env = role_of(config)
    out = search_dir(config, role)
    space = load_space(config.model, config.space, fixed={"batch_size": config.batch_size})
    settings = {"model": config.model, "tuner": config.tuner, "objective": config.objective,
                "epochs": config.epochs, "data": config.data, "val": config.val, "size": config.size,
                "space": space_to_dict(space)}
    if role != "worker":
        _check_same_search(out, settings, config.overwrite)
    previous_policy = keras.mixed_precision.global_policy().name
    finished = True
    with environment(env):
        try:
            jit: bool | str = "auto"
            if role != "chief":
                jit = device.setup().jit
                source = source if source is not None else _open(config)
                if config.objective == "val_f1_macro" and source.info.single_label:
                    raise UserError("--objective val_f1_macro needs multi-label data; use val_map on single-label data")
            tuner = make_tuner(config, SearchHyperModel(config, space, source, jit), out,
                               overwrite=config.overwrite and role != "worker")
            if role == "worker":
                print(f"Worker {env['KERASTUNER_TUNER_ID']}: asking {config.worker or 'the chief'} for trials", flush=True)
            else:
                print(f"Search folder {out}: {tuner.remaining_trials} of {config.max_trials} trials to run", flush=True)
            if role == "chief":
                tuner.save()
                serve(tuner.oracle, env["KERASTUNER_ORACLE_IP"], int(env["KERASTUNER_ORACLE_PORT"]), config.max_failures)
            else:
                try:
                    tuner.search(verbose=config.verbose)
                except _ProcessDone:
                    finished = False
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)
    if role == "worker":
        return out, finished
    best = write_results(tuner.oracle, out, config, space)
    if not finished:
        return out, False
    failing = consecutive_failures(tuner.oracle)
    if failing >= config.max_failures:
        raise UserError(f"The search stopped: the last {failing} trials failed; see {out / 'trials.csv'}", exit_code=1)
    if config.train_best and best is not None:
        train_best(out, config)
    return out, True


def _open(config: TuneConfig) -> Any:
    from yolol_tf.data import open_data

    source = open_data(config.data, val=config.val, size=config.size)
    if "val" not in source.splits or not source.info.counts.get("val"):
        raise UserError(f"{source.info.source}: no validation split; the search scores trials on it")
    return source


def train_best(out: Path, config: TuneConfig) -> Path:
    """Trains ``out/best.yaml`` in full into ``out/best`` (resuming it if an earlier attempt stopped)."""
    from yolol_tf.training import TrainConfig, train

    run_dir = out / "best"
    if (run_dir / runs.FINISHED_MARKER).is_file():
        print(f"The best configuration is already trained in {run_dir}")
        return run_dir
    overrides = {"out": str(run_dir), "epochs": config.train_epochs}
    train_config = config_lib.resolve(TrainConfig, out / "best.yaml", overrides)
    resume = run_dir.is_dir() and any(run_dir.iterdir())
    return train(train_config, resume=resume)
