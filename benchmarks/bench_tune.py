"""Search cost per trial: seconds and memory of `yolol_tf.tuning.search` trials against plain fits of the same models.

Runs a random search of a small cnn on a synthetic Sign-MNIST CSV (real ``open_data`` pipeline), then,
in the same process, builds, compiles and fits each trial's configuration directly (the baseline: no
tuner). Prints per-trial seconds and memory (from trials.csv), the tuner/plain time ratio, and the
growth of resident memory from trial to trial (it should stay flat: the session is cleared between
trials, but TensorFlow keeps some memory of every traced model: tensorflow#61791). Then the same search
with ``trials_per_process=2`` (each pair of trials in a fresh process) shows memory staying flat.

    python benchmarks/bench_tune.py [--trials 4] [--rows 600] [--epochs 1] [--per-process 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def write_csv(path: Path, rows: int, seed: int = 0) -> Path:
    """A Sign-MNIST-format CSV: 28x28 crops of five letters, each a bright bar at its own place."""
    rng = np.random.default_rng(seed)
    labels = np.arange(rows) % 5
    images = rng.integers(0, 60, (rows, 28, 28))
    for i, label in enumerate(labels):
        images[i, label * 5 : label * 5 + 4, :] = 230
    table = np.column_stack([labels, images.reshape(rows, -1)])
    header = "label," + ",".join(f"pixel{i}" for i in range(1, 785))
    np.savetxt(path, table, fmt="%d", delimiter=",", header=header, comments="")
    return path


def plain_fit(config, source) -> float:
    """Seconds to build, compile and fit one configuration without keras-tuner."""
    import keras

    from yolol_tf.models import build_model
    from yolol_tf.training import compile_model, steps_per_epoch
    from yolol_tf.training.callbacks import MAPCallback

    keras.backend.clear_session()
    gc.collect()
    start = time.perf_counter()
    info = source.info
    model = build_model(config.model, info.image_shape, info.num_classes, **config.model_options)
    compile_model(model, config, info, jit_compile=False)
    train = source.dataset("train", config.batch_size, training=True, augment=config.augment, repeat=True)
    val = source.dataset("val", config.batch_size)
    steps = steps_per_epoch(config, info)
    model.fit(
        train,
        epochs=config.epochs,
        steps_per_epoch=steps,
        callbacks=[MAPCallback(val, "softmax")],
        verbose=0,
        shuffle=False,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument(
        "--per-process", type=int, default=2, help="trials per process of the last search (0: skip)"
    )
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()

    import pandas as pd

    from yolol_tf.config import resolve
    from yolol_tf.data import open_data
    from yolol_tf.training import TrainConfig
    from yolol_tf.tuning.search import TuneConfig, tune
    from yolol_tf.tuning.space import train_values

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        csv = write_csv(tmp / "signs.csv", args.rows)
        space = tmp / "space.yaml"
        space.write_text("width: [8, 16]\ndepths: [1-1, 2-2]\nloss: [bce, focal]\nbatch_size: 32\n")
        source = open_data(str(csv))
        start = time.perf_counter()
        search = TuneConfig(
            model="cnn",
            data=str(csv),
            tuner="random",
            max_trials=args.trials,
            epochs=args.epochs,
            space=str(space),
            out=str(tmp / "search"),
            verbose=0,
        )
        out = tune(search, source=source)
        search_seconds = time.perf_counter() - start
        trials = pd.read_csv(out / "trials.csv")
        base = resolve(TrainConfig, out / "best.yaml", {"epochs": args.epochs})
        plain = []
        for _, row in trials.iterrows():
            values = train_values("cnn", {k: (None if pd.isna(v) else v) for k, v in row.items()})
            options = {**values, "model_options": values["model_options"], "data": base.data}
            plain.append(plain_fit(TrainConfig(**{**options, "epochs": args.epochs}), source))
        recycled = None
        if args.per_process:
            start = time.perf_counter()
            out2 = tune(
                dataclasses.replace(search, out=str(tmp / "search2"), trials_per_process=args.per_process)
            )
            recycled_seconds = time.perf_counter() - start
            recycled = pd.read_csv(out2 / "trials.csv")

    cols = [
        "trial_id",
        "status",
        "width",
        "depths",
        "loss",
        "seconds",
        "peak_memory_mb",
        "memory_start_mb",
        "memory_end_mb",
    ]
    print(trials[cols].to_string(index=False))
    done = trials[trials["status"] == "COMPLETED"]
    steady = done.iloc[1:] if len(done) > 2 else done  # the first trial pays for tracing and warm-up
    growth = np.polyfit(np.arange(len(steady)), steady["memory_start_mb"], 1)[0] if len(steady) > 1 else 0.0
    tuner_s, plain_s = (
        float(steady["seconds"].median()),
        float(np.median(plain[1:] if len(plain) > 2 else plain)),
    )
    print(f"\n{len(trials)} trials in {search_seconds:.1f} s (search incl. setup and reports)")
    print(
        f"seconds per trial: tuner median {tuner_s:.2f}, plain fit median {plain_s:.2f}, "
        f"ratio tuner/plain {tuner_s / plain_s:.2f}x"
    )
    print(
        f"peak RSS per trial: {done['peak_memory_mb'].min():.0f}..{done['peak_memory_mb'].max():.0f} MB; "
        f"RSS at trial start after the first trial: {steady['memory_start_mb'].iloc[0]:.0f} -> "
        f"{steady['memory_start_mb'].iloc[-1]:.0f} MB, slope {growth:+.1f} MB/trial"
    )
    if recycled is not None:
        print(
            f"\nwith trials_per_process={args.per_process}: {len(recycled)} trials in {recycled_seconds:.1f} s"
        )
        print(recycled[cols].to_string(index=False))
        print(
            f"peak RSS per trial: {recycled['peak_memory_mb'].min():.0f}..{recycled['peak_memory_mb'].max():.0f} MB "
            f"(in-process: {done['peak_memory_mb'].min():.0f}..{done['peak_memory_mb'].max():.0f} MB)"
        )


if __name__ == "__main__":
    main()
