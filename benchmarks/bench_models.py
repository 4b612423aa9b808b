"""Training throughput of our ResNet-50 (our BatchNormalization) against Keras' layer and keras.applications.

Three networks, same input, same run: A = ``build_resnet50(norm="ours")``, B = the same network with
``norm="keras"``, C = ``keras.applications.ResNet50(weights=None)``. The measurements are interleaved
(A B C A B C ...) and summarised by their medians so that drift in a shared machine's load cancels out;
images per CPU-second of this process are reported too, being less sensitive to other processes' load.
On CPU the models are compiled with ``jit_compile=False``: Keras 3's default "auto" may pick XLA, which is
slow on CPU. Goal: A >= 0.95x of both B and C.

Example: python benchmarks/bench_models.py --rounds 8 --steps 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds; the median is reported")
    parser.add_argument("--steps", type=int, default=3, help="training steps per model per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model first")
    parser.add_argument("--jit", action="store_true", help="compile with XLA (default: off on CPU)")
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    from yolol_tf.models import build_model

    gpu = bool(tf.config.list_physical_devices("GPU"))
    jit = args.jit or ("auto" if gpu else False)
    shape = (args.size, args.size, 3)
    models = {
        "ours (our BN)": build_model("resnet50", shape, args.classes, norm="ours"),
        "ours (keras BN)": build_model("resnet50", shape, args.classes, norm="keras"),
        "keras.applications": keras.applications.ResNet50(
            weights=None, input_shape=shape, classes=args.classes, classifier_activation=None
        ),
    }
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (args.batch, *shape)).astype("float32"))
    labels = tf.constant(rng.integers(0, 2, (args.batch, args.classes)).astype("float32"))
    for model in models.values():
        model.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
            loss=keras.losses.BinaryCrossentropy(from_logits=True),
            jit_compile=jit,
        )
        for _ in range(args.warmup):
            model.train_on_batch(images, labels)

    print(
        f"device: {'GPU' if gpu else 'CPU'}, jit_compile={jit}, batch {args.batch}, {args.size} px, "
        f"{args.rounds} rounds x {args.steps} steps per model (after {args.warmup} warm-up steps)"
    )
    rates: dict[str, list[float]] = {name: [] for name in models}
    cpu_rates: dict[str, list[float]] = {name: [] for name in models}
    for round_index in range(args.rounds):
        for name, model in models.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                loss = model.train_on_batch(images, labels)
            float(np.asarray(loss))  # wait for the last step to finish
            rates[name].append(args.steps * args.batch / (time.perf_counter() - start))
            cpu_rates[name].append(args.steps * args.batch / (time.process_time() - cpu_start))
        print(f"round {round_index + 1} img/s: " + ", ".join(f"{n} {r[-1]:.1f}" for n, r in rates.items()))

    for title, values in (("img/s (wall clock)", rates), ("img per CPU-second", cpu_rates)):
        medians = {name: statistics.median(v) for name, v in values.items()}
        print(f"\ntraining throughput, median {title}:")
        for name, value in medians.items():
            print(f"  {name:20s} {value:8.1f}")
        # Medians of the per-round ratios pair each measurement with its neighbours, cancelling drift.
        for other, label in (
            ("ours (keras BN)", "same network with keras BN"),
            ("keras.applications", "keras.applications.ResNet50"),
        ):
            paired = statistics.median(
                a / b for a, b in zip(values["ours (our BN)"], values[other], strict=True)
            )
            print(f"  ratio ours / {label}: {paired:.3f} (median of per-round ratios)")


if __name__ == "__main__":
    main()
