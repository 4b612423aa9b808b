"""A worker of the distribution tests, run in a fresh process (a multi-worker strategy and logical devices can
only be set up before TensorFlow starts):

    python -m tests.support.distribute_worker worker --workers 127.0.0.1:P0,127.0.0.1:P1 --task-index 0 --out DIR
    python -m tests.support.distribute_worker mirrored --out DIR

Each writes ``DIR/result-<task>.json`` (history and weights) when it finishes. The tests train the same tiny
model in their own process with :func:`train`, to compare.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from tests.support.models import tiny_model

GLOBAL_BATCH = 16
STEPS = 4  # 64 samples per epoch


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


def compiled_model():
    """The tiny "vector" model on 8 features (our synchronized BatchNormalization), compiled with SGD."""
    import keras

    model = tiny_model(3, (8,), body="vector")
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
    """Trains :func:`compiled_model` under ``strategy``; returns its history and weights."""
    from yolol_tf.training import distribute

    with strategy.scope():
        model = compiled_model()
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


def _die_at(epoch: int):
    """A Keras callback that kills its own process at the start of ``epoch``, like a lost machine."""
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
        callbacks.append(_die_at(args.die_at_epoch))
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
        model = compiled_model()
    x, y = tiny_data()
    # Batches of 6: the last one is smaller, as a validation split's usually is.
    truth, probs = predict_probs(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(6), "sigmoid")
    expected = 1.0 / (1.0 + np.exp(-np.asarray(model(x, training=False), np.float64)))
    return {
        "rows": len(probs),
        "truth_gap": float(np.abs(truth - y).max()),
        "gap": float(np.abs(probs - expected).max()),
    }


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
