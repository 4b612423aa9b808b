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
import math
import sys
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt

from yolol_tf import config as config_lib
from yolol_tf import runs
from yolol_tf.errors import UserError
from yolol_tf.models import pinned_defaults
from yolol_tf.training.config import steps_per_epoch
from yolol_tf.tuning.cluster import consecutive_failures, environment, reach_chief, role_of, serve
from yolol_tf.tuning.config import TuneConfig, data_values, recipe_values, search_dir, validate
from yolol_tf.tuning.processes import child_main, in_child, run_in_processes
from yolol_tf.tuning.report import write_results
from yolol_tf.tuning.space import Param, load_space, space_to_dict, train_values
from yolol_tf.tuning.tuners import PROJECT, ProcessDone, make_tuner

__all__ = ["SearchHyperModel", "TuneConfig", "child_main", "run_search", "train_best", "tune"]


def declare(hp: kt.HyperParameters, param: Param) -> Any:
    """Declares ``param`` on ``hp`` (inside its conditional scope) and returns its value for this trial."""

    def make() -> Any:
        if param.kind == "fixed":
            return hp.Fixed(param.name, param.values[0])
        if param.kind == "choice":
            return hp.Choice(param.name, list(param.values))
        sampling = "log" if param.log else "linear"
        if param.kind == "int":
            return hp.Int(
                param.name, int(param.low), int(param.high), step=int(param.step or 1), sampling=sampling
            )
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

    def __init__(
        self, config: TuneConfig, space: tuple[Param, ...], source: Any = None, jit: bool | str = "auto"
    ):
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
        from yolol_tf.training.config import pin_model_options

        values = train_values(self.config.model, {p.name: declare(hp, p) for p in self.space})
        c = self.config
        train_config = TrainConfig(
            **values,
            **data_values(c),
            **recipe_values(c),
            epochs=c.epochs,
            seed=c.seed,
            steps_per_epoch=c.steps_per_epoch,
            monitor=c.objective,
        )
        train_config = dataclasses.replace(train_config, loss=effective_loss(train_config, self.source.info))
        # The network's options whose default changed are written out, as a run's config.yaml has them.
        return pin_model_options(train_config, None)

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        from yolol_tf.models import build_model
        from yolol_tf.training import class_frequency, compile_model

        config = self.train_config(hp)
        info = self.source.info
        if config.loss == "weighted_bce" and self._class_freq is None:
            self._class_freq = class_frequency(self.source, info)
        keras.utils.set_random_seed(config.seed)
        model = build_model(config.model, info.image_shape, info.num_classes, **config.model_options)
        return compile_model(
            model,
            config,
            info,
            self._class_freq,
            steps_per_epoch=steps_per_epoch(config, info),
            jit_compile=self.jit,
        )

    def fit(
        self,
        hp: kt.HyperParameters,
        model: keras.Model,
        *args: Any,
        callbacks: list | None = None,
        epochs: int | None = None,
        initial_epoch: int = 0,
        verbose: Any = 2,
        **kwargs: Any,
    ) -> dict[str, float]:
        """Fits one trial; returns its figures at the best epoch and how many epochs ran."""
        from yolol_tf.training.callbacks import EMAWeights, MAPCallback
        from yolol_tf.training.compile import training_metrics

        config = self.train_config(hp)
        objective = self.config.objective
        train_ds = self.source.dataset(
            "train", config.batch_size, training=True, augment=config.augment, seed=config.seed, repeat=True
        )
        val_ds = self.source.dataset("val", config.batch_size)
        activation = "softmax" if config.loss == "cce" else "sigmoid"
        # MAPCallback first: keras-tuner's checkpoint callback must see val_map in the logs. With ema_decay
        # the averaged weights are validated and checkpointed, as in a training run.
        ema = [EMAWeights()] if config.ema_decay else []
        history = model.fit(
            train_ds,
            epochs=epochs or config.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch(config, self.source.info),
            callbacks=[
                *ema,
                MAPCallback(val_ds, activation, training_metrics(self.source.info)),
                *(callbacks or []),
                *(e.swap_back for e in ema),
            ],
            # No validation_data: MAPCallback's one pass logs val_loss, val_map and the metrics.
            verbose=verbose,
            shuffle=False,
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
    changed = sorted(k for k in settings.keys() | before.keys() if before.get(k) != settings.get(k))
    if changed:
        raise UserError(
            f"{out} holds a different search ({', '.join(changed)} changed; see {path}). "
            "Continue it with the same settings, start afresh with --overwrite, or pick another --out."
        )


def tune(config: TuneConfig, *, source: Any = None) -> Path:
    """Runs (or continues, or serves, or works on) a search and returns the search folder.

    Args:
        config: the search's settings.
        source: the data, if already open (a ``yolol_tf.data.DataSource``); default ``open_data(config)``.
    """
    validate(config)
    role, _ = role_of(config)
    if config.trials_per_process and role != "chief" and not in_child():
        if source is not None:
            raise UserError("trials_per_process runs trials in new processes: give data, not an open source")
        return run_in_processes(config, role)
    return run_search(config, source)[0]


def run_search(config: TuneConfig, source: Any) -> tuple[Path, bool]:
    """The search in this process; returns the folder and whether the search is finished.

    Args:
        config: the search's settings.
        source: the data, if already open; None opens ``config``'s (a chief opens none).
    """
    from yolol_tf import device

    role, env = role_of(config)
    out = search_dir(config, role)
    space = load_space(config.model, config.space, fixed={"batch_size": config.batch_size})
    settings = {
        "model": config.model,
        "tuner": config.tuner,
        "objective": config.objective,
        "epochs": config.epochs,
        **data_values(config),
        **recipe_values(config),
        "space": space_to_dict(space),
        # The builder's defaults that have changed before (ModelSpec.former_options): a search started under
        # other defaults built other networks, and is not continued.
        **({"network": network} if (network := pinned_defaults(config.model)) else {}),
    }
    if role != "worker":
        _check_same_search(out, settings, config.overwrite)
    if role == "worker":  # fail fast rather than wait an hour for a chief that is gone
        reach_chief(env["KERASTUNER_ORACLE_IP"], int(env["KERASTUNER_ORACLE_PORT"]))
    if role != "chief":
        device.check_devices_before_training()  # hides a GPU that disagrees with the CPU, before TF starts
    previous_policy = keras.mixed_precision.global_policy().name
    finished = True
    with environment(env):
        try:
            jit: bool | str = "auto"
            if role != "chief":
                jit = device.setup().jit
                source = source if source is not None else open_source(config)
                # best.yaml records the size the trials trained at, as a run's config.yaml does.
                config = dataclasses.replace(config, size=int(source.info.image_shape[0]))
                if config.objective == "val_f1_macro" and source.info.single_label:
                    raise UserError(
                        "--objective val_f1_macro needs multi-label data; use val_map on single-label data"
                    )
            tuner = make_tuner(
                config,
                SearchHyperModel(config, space, source, jit),
                out,
                overwrite=config.overwrite and role != "worker",
            )
            if role == "worker":
                print(
                    f"Worker {env['KERASTUNER_TUNER_ID']}: asking {config.worker or 'the chief'} for trials",
                    file=sys.stderr,
                    flush=True,
                )
            else:
                print(
                    f"Search folder {out}: {tuner.remaining_trials} of {config.max_trials} trials to run",
                    file=sys.stderr,
                    flush=True,
                )
            if role == "chief":
                tuner.save()
                serve(
                    tuner.oracle,
                    env["KERASTUNER_ORACLE_IP"],
                    int(env["KERASTUNER_ORACLE_PORT"]),
                    config.max_failures,
                )
            else:
                try:
                    tuner.search(verbose=config.verbose)
                except ProcessDone:
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
        raise UserError(
            f"The search stopped: the last {failing} trials failed; see {out / 'trials.csv'}", exit_code=1
        )
    if config.train_best and best is not None:
        train_best(out, config)
    return out, True


def open_source(config: TuneConfig) -> Any:
    """The search's data (``config`` is a ``DataSettings``), refused without a validation split."""
    from yolol_tf.data import open_data

    source = open_data(config)
    if "val" not in source.splits or not source.info.counts.get("val"):
        raise UserError(f"{source.info.source}: no validation split; the search scores trials on it")
    return source


def train_best(out: Path, config: TuneConfig) -> Path:
    """Trains ``out/best.yaml`` in full into ``out/best`` (resuming it if an earlier attempt stopped), with
    the model's own defaults under it, as ``yolol-tf train --config best.yaml`` would."""
    from yolol_tf.training import load_config, train

    run_dir = out / "best"
    if (run_dir / runs.FINISHED_MARKER).is_file():
        print(f"The best configuration is already trained in {run_dir}", file=sys.stderr)
        return run_dir
    overrides = {"out": str(run_dir), "epochs": config.train_epochs}
    train_config = load_config(out / "best.yaml", overrides)
    resume = run_dir.is_dir() and any(run_dir.iterdir())
    return train(train_config, resume=resume)
