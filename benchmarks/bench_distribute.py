"""Cost of the multi-worker training loop: ``distribute.custom_fit`` against ``Model.fit``, one process.

Trains the same small CNN (our ``cnn`` builder, 32 px RGB inputs, 10 classes) on the same in-memory
batches with ``Model.fit`` (the baseline) and with ``yolol_tf.training.distribute.custom_fit``, both under the
default strategy, and prints steps per second and their ratio. ``custom_fit`` runs one ``tf.function``
call per step and reads the metrics every step, as ``Model.fit`` does with ``steps_per_execution=1``; a
ratio near 1 means multi-worker users lose nothing to the loop itself (the all-reduce is the network's).

    python benchmarks/bench_distribute.py [--steps 60] [--batch 32] [--size 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="timed steps per run")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; the best is reported")
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    from yolol_tf.models import build_model
    from yolol_tf.training import distribute

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.batch * 8, args.size, args.size, 3)).astype("float32")
    y = (rng.random((args.batch * 8, 10)) < 0.2).astype("float32")
    dataset = (
        tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch, drop_remainder=True).cache().repeat()
    )

    def model() -> keras.Model:
        keras.utils.set_random_seed(0)
        m = build_model("cnn", (args.size, args.size, 3), 10, width=16, depths=(1, 1, 1))
        m.compile(
            keras.optimizers.Adam(1e-3),
            keras.losses.BinaryCrossentropy(from_logits=True),
            metrics=[keras.metrics.AUC(curve="PR", multi_label=True, num_labels=10, from_logits=True)],
            jit_compile=False,
        )
        return m

    class Timer(keras.callbacks.Callback):
        """Times the second epoch: the first one includes tracing the step function."""

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.rate = args.steps / (time.perf_counter() - self.start)

    def fit(m: keras.Model, timer: Timer) -> None:
        m.fit(dataset, epochs=2, steps_per_epoch=args.steps, verbose=0, callbacks=[timer])

    def custom(m: keras.Model, timer: Timer) -> None:
        distribute.custom_fit(
            m,
            dataset,
            epochs=2,
            steps_per_epoch=args.steps,
            verbose=0,
            callbacks=[timer],
            strategy=tf.distribute.get_strategy(),
        )

    # Interleaved, so load from other processes on the machine hits both alike; the best run of each counts.
    runs = {"Model.fit (baseline)": fit, "distribute.custom_fit": custom}
    rates = dict.fromkeys(runs, 0.0)
    for _ in range(args.repeats):
        for name, run in runs.items():
            timer = Timer()
            run(model(), timer)
            rates[name] = max(rates[name], timer.rate)
    for name, rate in rates.items():
        print(f"{name:24s} {rate:8.1f} steps/s")
    ratio = rates["distribute.custom_fit"] / rates["Model.fit (baseline)"]
    print(
        f"custom_fit / fit: {ratio:.2f}x (batch {args.batch}, {args.size}px, {args.steps} steps x 2 epochs)"
    )


if __name__ == "__main__":
    main()
