"""CLI command: tune (registered on the shared Typer app).

A hyperparameter search over one model's space (MODEL: a name of ``yolol_tf.models.MODEL_NAMES``); the
help text shows every space.

Examples:
    One machine, 20 random trials of 3 epochs, then train the best in full::

        yolol-tf tune MODEL --data data.yaml --max-trials 20 --epochs 3 --out saved_models/tune-MODEL --train-best

    Continue it later with 40 trials (the 20 finished ones are not rerun)::

        yolol-tf tune MODEL --data data.yaml --max-trials 40 --epochs 3 --out saved_models/tune-MODEL

    A chief and two workers on machines that share /shared (the chief only hands out trials)::

        chief$    yolol-tf tune MODEL --data /shared/data.yaml --out /shared/tune-MODEL --chief 0.0.0.0:8000
        gpu1$     yolol-tf tune MODEL --data /shared/data.yaml --out /shared/tune-MODEL --worker chief-host:8000
        gpu2$     yolol-tf tune MODEL --data /shared/data.yaml --out /shared/tune-MODEL --worker chief-host:8000
"""

from __future__ import annotations

import enum

import typer

from yolol_tf.cli import options
from yolol_tf.cli.app import app
from yolol_tf.models import MODEL_NAMES, QUICK_MODEL
from yolol_tf.tuning.space import space_table

# Every model of the registry has a search space.
Model = enum.Enum("Model", {name: name for name in MODEL_NAMES}, type=str)


class Tuner(str, enum.Enum):
    """keras-tuner's search algorithms."""

    random = "random"
    hyperband = "hyperband"
    bayesian = "bayesian"


class Objective(str, enum.Enum):
    """What a trial is scored on (maximised)."""

    val_map = "val_map"
    val_f1_macro = "val_f1_macro"


def _help() -> str:
    spaces = "\n\n".join(f"{model}:\n\n```\n{space_table(model)}\n```" for model in MODEL_NAMES)
    return f"""Search hyperparameters of MODEL with keras-tuner; leave trials.csv, trials.png and best.yaml.

Each trial trains with the same builders, compile and data pipeline as `yolol-tf train`, for --epochs
epochs, and is scored by the best validation mAP (or macro F1) of its epochs. Rerunning the same command
with the same --out continues the search and never reruns a finished trial; --overwrite starts afresh.
A trial that fails (bad values, out of memory) is recorded FAILED and the search goes on.

Search spaces (conditional ones apply only with their loss):

{spaces}

A --space YAML narrows or fixes any of them: `learning_rate: {{min: 1.0e-4, max: 1.0e-2}}`,
`loss: [bce, asl]`, `dropout: 0.2`.

Several machines: start one process with `--chief HOST:PORT` (it serves trials, trains nothing) and
any number with `--worker CHIEF_HOST:PORT`, all with the same model, space and --out on a shared folder.

Example: yolol-tf tune {QUICK_MODEL} --max-trials 20 --epochs 3 --out saved_models/tune-{QUICK_MODEL}

Example: yolol-tf tune {QUICK_MODEL} --out /shared/tune-{QUICK_MODEL} --worker chief-host:8000 --worker-id gpu1
"""


@app.command("tune", help=_help())
def tune_command(
    model: Model = typer.Argument(..., help="Model whose space to search."),
    data: str | None = options.DATA,
    val: str | None = options.VAL,
    size: int | None = options.SIZE,
    tuner: Tuner = typer.Option(Tuner.random, "--tuner", help="Search algorithm."),
    max_trials: int = typer.Option(
        10, "--max-trials", help="Trials in all (more on a rerun: only the new ones run)."
    ),
    epochs: int = typer.Option(3, "--epochs", help="Epochs per trial (hyperband: the most a trial gets)."),
    objective: Objective = typer.Option(
        Objective.val_map, "--objective", help="Validation figure to maximise."
    ),
    space: str | None = typer.Option(None, "--space", help="YAML narrowing or fixing parts of the space."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Fix the batch size (default: searched)."
    ),
    steps_per_epoch: int | None = typer.Option(
        None, "--steps-per-epoch", help="Steps per epoch (default one pass)."
    ),
    out: str | None = typer.Option(
        None, "--out", help="Search folder (default saved_models/tune-MODEL-TIME)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete the search in --out and start afresh."),
    train_best: bool = typer.Option(
        False, "--train-best", help="Then train best.yaml in full into OUT/best."
    ),
    train_epochs: int | None = typer.Option(
        None, "--train-epochs", help="Epochs of --train-best (default 10)."
    ),
    chief: str | None = typer.Option(
        None, "--chief", help="HOST:PORT: serve trials to workers (trains nothing)."
    ),
    worker: str | None = typer.Option(
        None, "--worker", help="CHIEF_HOST:PORT: run trials the chief hands out."
    ),
    worker_id: str | None = typer.Option(
        None, "--worker-id", help="This worker's name (default hostname-pid); reuse it to resume its trial."
    ),
    seed: int = typer.Option(0, "--seed", help="Seeds the search, weights and shuffling."),
    max_failures: int = typer.Option(
        3, "--max-failures", help="Stop after this many failed trials in a row."
    ),
    warmup_epochs: float | None = options.WARMUP_EPOCHS,
    ema_decay: float | None = options.EMA_DECAY,
    trials_per_process: int | None = typer.Option(
        None,
        "--trials-per-process",
        help="Run trials in fresh processes of this many each: memory stays flat.",
    ),
) -> None:
    from yolol_tf.tuning.search import TuneConfig, tune

    config = TuneConfig(
        model=model.value, data=data, val=val, size=size, tuner=tuner.value, max_trials=max_trials,
        epochs=epochs, objective=objective.value, space=space, batch_size=batch_size,
        steps_per_epoch=steps_per_epoch, out=out, overwrite=overwrite, train_best=train_best,
        train_epochs=train_epochs, chief=chief, worker=worker, worker_id=worker_id, seed=seed,
        max_failures=max_failures, trials_per_process=trials_per_process, warmup_epochs=warmup_epochs,
        ema_decay=ema_decay,
    )  # fmt: skip
    tune(config)
