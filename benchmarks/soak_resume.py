"""Soak test of fault tolerance: kill `yolol-tf train` at random moments, resume, check nothing was lost.

Each round starts a small training (our cnn, 32 px, the demo data) as a user would, kills it with SIGKILL
after a random delay anywhere in its life (start-up, an epoch, a checkpoint, the report), then runs the
same command with ``--resume`` (or afresh, if the kill came before the run folder existed) until it
finishes. Every finished run must have:

- every epoch exactly once in history.csv (none lost, none repeated);
- best.keras holding the best epoch of history.csv: its validation mAP, recomputed here, equals the best
  ``val_map`` in history.csv;
- metrics.json agreeing with both (its best epoch and value).

    python benchmarks/soak_resume.py [--rounds 20] [--epochs 4] [--seed 0] [--out /tmp/soak]

Prints one line per round and a summary; exits 1 if any round broke an invariant.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _train_command(store: Path, run: Path, epochs: int, resume: bool) -> list[str]:
    return [
        sys.executable, "-m", "yolol_tf", "train", "cnn", "--data", str(store), "--out", str(run),
        "--epochs", str(epochs), "--batch-size", "32", "--augment", "0", "--mixed-precision", "off", "--no-jit",
        *(["--resume"] if resume else []),
    ]  # fmt: skip


def _check(run: Path, store: Path, epochs: int) -> list[str]:
    """The invariants of a finished run; returns what is broken."""
    import numpy as np
    import pandas as pd

    from yolol_tf.data import open_data
    from yolol_tf.metrics import mean_average_precision
    from yolol_tf.models import load_model
    from yolol_tf.models.outputs import predict_probs

    broken = []
    history = pd.read_csv(run / "history.csv")
    metrics = json.loads((run / "metrics.json").read_text())
    trained = list(history["epoch"])
    if trained != list(range(len(trained))) or not 1 <= len(trained) <= epochs:
        broken.append(f"history.csv epochs {trained}")
    best_row = int(history["val_map"].idxmax())
    best_epoch, best_value = int(history["epoch"][best_row]), float(history["val_map"][best_row])
    if metrics.get("best_epoch") != best_epoch + 1 or abs(metrics.get("best_value", -1) - best_value) > 1e-6:
        broken.append(f"metrics.json best {metrics.get('best_epoch')}/{metrics.get('best_value')} vs "
                      f"history {best_epoch + 1}/{best_value}")  # fmt: skip
    source = open_data(str(store))
    y_true, y_prob = predict_probs(load_model(run / "best.keras"), source.dataset("val", 64))
    recomputed = float(mean_average_precision(y_true, y_prob))
    if abs(recomputed - best_value) > 1e-4:
        broken.append(f"best.keras val mAP {recomputed:.6f} but history's best is {best_value:.6f}")
    if (run / "backup").exists() or (run / "fit.json").exists():
        broken.append("backup/ or fit.json left in a finished run")
    del np
    return broken


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = args.out or Path(tempfile.mkdtemp(prefix="yolol-tf-soak-"))
    work.mkdir(parents=True, exist_ok=True)

    from yolol_tf.data import demo_data_path, prepare

    store = prepare(demo_data_path(), work / "store", size=32, progress=False)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    # One uninterrupted run gives the time scale the kill moments are drawn from.
    start = time.perf_counter()
    subprocess.run(_train_command(store, work / "reference", args.epochs, False), env=env, check=True,
                   capture_output=True)  # fmt: skip
    duration = time.perf_counter() - start
    print(f"uninterrupted run: {duration:.1f} s; killing at uniform moments in [0, {duration:.1f}] s")

    failures = kills = attempts = 0
    while kills < args.rounds and attempts < 3 * args.rounds:
        run = work / f"run-{attempts:02d}"
        attempts += 1
        delay = rng.uniform(0.0, duration)
        started = time.perf_counter()
        proc = subprocess.Popen(_train_command(store, run, args.epochs, False), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            proc.wait(timeout=delay)
            # It finished first: this machine is faster now; draw later moments from the time it took.
            duration = time.perf_counter() - started
            print(f"attempt {attempts:2d}: finished in {duration:.1f} s before the kill at {delay:.1f} s")
            continue
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        kills += 1
        state = "before the run folder existed" if not (run / "config.yaml").exists() else "during the run"
        resumes = 0
        while not (run / "metrics.json").exists():
            resumed = subprocess.run(_train_command(store, run, args.epochs, (run / "config.yaml").exists()),
                                     env=env, capture_output=True, text=True)  # fmt: skip
            resumes += 1
            if resumed.returncode != 0 or resumes > 2:
                print(f"kill {kills}: resume failed ({resumed.returncode}): {resumed.stderr[-400:]}")
                break
        broken = _check(run, store, args.epochs) if (run / "metrics.json").exists() else ["no metrics.json"]
        failures += bool(broken)
        print(f"kill {kills:2d}: at {delay:5.1f} s, {state}, {resumes} resume(s): "
              f"{'OK' if not broken else 'BROKEN: ' + '; '.join(broken)}", flush=True)  # fmt: skip
    print(f"{kills - failures} of {kills} killed runs kept every invariant ({attempts} started)")
    if args.out is None:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures or kills < args.rounds else 0


if __name__ == "__main__":
    sys.exit(main())
