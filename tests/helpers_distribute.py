"""Helpers for the distribution tests: a tiny model and data, worker processes on 127.0.0.1, and the runs.

A worker is this module run as a script, so every test process starts TensorFlow fresh (a multi-worker
strategy and logical devices can only be set up before TensorFlow starts):

    python -m tests.helpers_distribute worker --workers 127.0.0.1:P0,127.0.0.1:P1 --task-index 0 --out DIR
    python -m tests.helpers_distribute mirrored --out DIR

Each writes ``DIR/result-<task>.json`` (history and weights) when it finishes. :func:`start_train_cli`
starts real ``yolol-tf train`` workers instead.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GLOBAL_BATCH = 16
STEPS = 4  # 64 samples per epoch


def free_ports(count: int) -> list[int]:
    """Ports on 127.0.0.1 free at the time of asking (held open together so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tiny_data() -> tuple[np.ndarray, np.ndarray]:
    """64 samples of 8 features with 3 multi-hot labels that depend on the features."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(GLOBAL_BATCH * STEPS, 8)).astype("float32")
    y = (x[:, :3] + 0.5 * x[:, 3:6] > 0).astype("float32")
    return x, y


def tiny_dataset(repeat: bool = True):
    """Global batches of :func:`tiny_data`, in a fixed order (so workers' data shards are disjoint)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(tiny_data()).batch(GLOBAL_BATCH)
    return ds.repeat() if repeat else ds


def tiny_model():
    """A compiled Dense-BN-Dense classifier on 8 features, with our synchronized BatchNormalization."""
    import keras

    from yolol_tf.models.layers import BatchNormalization

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, name="dense"),
            BatchNormalization(synchronized=True, name="bn"),
            keras.layers.Activation("relu"),
            keras.layers.Dense(3, name="logits"),
        ]
    )
    model.compile(
        keras.optimizers.SGD(0.1, momentum=0.9),
        keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")],
    )
    return model


def train(
    strategy,
    epochs: int,
    *,
    use_fit: bool = False,
    callbacks: list | None = None,
    backup_dir: str | None = None,
) -> dict:
    """Trains :func:`tiny_model` under ``strategy``; returns its history and weights."""
    from yolol_tf.training import distribute

    with strategy.scope():
        model = tiny_model()
    args = dict(
        epochs=epochs,
        steps_per_epoch=STEPS,
        validation_data=tiny_dataset(repeat=False),
        callbacks=callbacks,
        verbose=0,
    )
    if use_fit:
        history = model.fit(tiny_dataset(), **args)
    else:
        history = distribute.custom_fit(
            model, tiny_dataset(), strategy=strategy, backup_dir=backup_dir, **args
        )
    return {"history": history.history, "weights": [w.tolist() for w in model.get_weights()]}


class _Die:
    """A Keras callback that kills its own process at the start of an epoch, like a lost machine."""

    def __new__(cls, epoch: int):
        import keras

        class Die(keras.callbacks.Callback):
            def on_epoch_begin(self, current: int, logs: dict | None = None) -> None:
                if current == epoch:
                    os._exit(137)

        return Die()


def _worker(args: argparse.Namespace) -> None:
    import keras

    from yolol_tf.training import distribute

    strategy = distribute.make_strategy("multi-worker", workers=args.workers, task_index=args.task_index)
    out = Path(args.out)
    # Appending, as a resumed run does, so the history of a restarted run is whole.
    callbacks = [keras.callbacks.CSVLogger(str(out / "history.csv"), append=True)]
    if args.die_at_epoch is not None and not (out / f"died-{args.task_index}").exists():
        (out / f"died-{args.task_index}").touch()
        callbacks.append(_Die(args.die_at_epoch))
    if args.backup:
        callbacks.append(keras.callbacks.BackupAndRestore(str(out / "backup")))
    result = train(strategy, args.epochs, callbacks=callbacks)
    result["chief"] = distribute.is_chief(strategy)
    (out / f"result-{args.task_index}.json").write_text(json.dumps(result))


def _mirrored(args: argparse.Namespace) -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from yolol_tf.training import distribute

    strategy = distribute.make_strategy("mirrored")
    results = {
        "replicas": strategy.num_replicas_in_sync,
        "needs_custom_loop": distribute.needs_custom_loop(strategy),
        "fit": train(strategy, args.epochs, use_fit=True),
        "custom_fit": train(strategy, args.epochs),
        "one_device": train(tf.distribute.get_strategy(), args.epochs, use_fit=True),
        "predict": _predict_under(strategy),
    }
    (Path(args.out) / "result-mirrored.json").write_text(json.dumps(results))


def _predict_under(strategy) -> dict:
    """Rows and largest gap of ``predict_probs`` (as MAPCallback uses it) against ``model(x)``."""
    import tensorflow as tf

    from yolol_tf.training.callbacks import predict_probs

    with strategy.scope():
        model = tiny_model()
    x, y = tiny_data()
    # Batches of 6: the last one is smaller, as a validation split's usually is.
    truth, probs = predict_probs(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(6), "sigmoid")
    expected = 1.0 / (1.0 + np.exp(-np.asarray(model(x, training=False), np.float64)))
    return {
        "rows": len(probs),
        "truth_gap": float(np.abs(truth - y).max()),
        "gap": float(np.abs(probs - expected).max()),
    }


def start(mode: str, out: Path, *args: str) -> subprocess.Popen:
    """Starts ``python -m tests.helpers_distribute mode --out out ...``; output goes to out/log-*.txt."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    name = "-".join([mode, *[a for a in args if a.isdigit()]])
    log = open(out / f"log-{name}-{time.monotonic_ns()}.txt", "w")
    return subprocess.Popen(
        [sys.executable, "-m", "tests.helpers_distribute", mode, "--out", str(out), *args],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def start_workers(
    out: Path, count: int = 2, *args: str, ports: list[int] | None = None
) -> list[subprocess.Popen]:
    """Starts ``count`` workers on 127.0.0.1 training together."""
    workers = ",".join(f"127.0.0.1:{p}" for p in ports or free_ports(count))
    return [start("worker", out, "--workers", workers, "--task-index", str(i), *args) for i in range(count)]


def run_with_restarts(
    out: Path, count: int, args: list[str], first_args: dict[int, list[str]], timeout: float
) -> list[int | None]:
    """Runs ``count`` workers, restarting each one that fails once (as a cluster manager would).

    Args:
        out: the workers' folder.
        count: number of workers.
        args: arguments of every worker.
        first_args: extra arguments of a worker's first start, by task index.
        timeout: seconds for the whole run.

    Returns:
        The final exit codes (None: still running at the timeout, then killed).
    """
    workers = ",".join(f"127.0.0.1:{p}" for p in free_ports(count))

    def launch(index: int, extra: list[str]) -> subprocess.Popen:
        return start("worker", out, "--workers", workers, "--task-index", str(index), *args, *extra)

    processes = [launch(i, first_args.get(i, [])) for i in range(count)]
    restarted = [False] * count
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            codes = [p.poll() for p in processes]
            if all(code == 0 for code in codes):
                break
            for i, code in enumerate(codes):
                if code not in (None, 0) and not restarted[i]:
                    processes[i], restarted[i] = launch(i, []), True
            time.sleep(0.2)
        return [p.poll() for p in processes]
    finally:
        kill_all(processes)


def start_train_cli(root: Path, count: int, args: list[str]) -> list[subprocess.Popen]:
    """Starts ``count`` workers of ``yolol-tf train ARGS --workers ... --task-index i`` on 127.0.0.1.

    Worker ``i`` runs in ``root/worker-i`` (its working directory, HOME, TMPDIR and yolol-tf cache), so a
    test sees anything it writes outside the run folder; its output goes to ``root/log-train-i.txt``.
    """
    workers = ",".join(f"127.0.0.1:{p}" for p in free_ports(count))
    code = "import sys; from yolol_tf.cli import main; sys.exit(main(sys.argv[1:]))"
    processes = []
    for i in range(count):
        home = root / f"worker-{i}"
        for folder in ("home", "tmp", "cache"):
            (home / folder).mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
        env.update(
            TF_CPP_MIN_LOG_LEVEL="2",
            CUDA_VISIBLE_DEVICES="",
            HOME=str(home / "home"),
            TMPDIR=str(home / "tmp"),
            YOLOL_TF_CACHE=str(home / "cache"),
        )
        # `import keras` itself writes keras.json and Matplotlib's font cache in every process: not ours.
        env.update(
            KERAS_HOME=str(root / "library-cache" / "keras"),
            MPLCONFIGDIR=str(root / "library-cache" / "matplotlib"),
        )
        log = open(root / f"log-train-{i}.txt", "w")
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", code, "train", *args, "--workers", workers, "--task-index", str(i)],
                cwd=home,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    return processes


def files_under(folder: Path) -> list[str]:
    """Paths of the files below ``folder``, relative to it (empty folders do not count)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


def wait_all(processes: list[subprocess.Popen], timeout: float) -> list[int | None]:
    """Exit codes of ``processes`` within ``timeout`` seconds in all (None: still running)."""
    deadline = time.monotonic() + timeout
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            codes.append(None)
    return codes


def kill_all(processes: list[subprocess.Popen]) -> None:
    """Kills the processes still running (by their own ids) and reaps them."""
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


def logs(out: Path) -> str:
    """The workers' output, for a failing assertion's message."""
    return "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in sorted(out.glob("log-*.txt")))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["worker", "mirrored"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--workers")
    parser.add_argument("--task-index", type=int)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--die-at-epoch", type=int, help="first run only: exit at the start of this epoch")
    parser.add_argument("--backup", action="store_true", help="add keras.callbacks.BackupAndRestore")
    args = parser.parse_args(argv)
    (_worker if args.mode == "worker" else _mirrored)(args)


if __name__ == "__main__":
    main()
