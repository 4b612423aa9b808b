"""Size and single-image latency of every export format, and the int8 mAP drop, on the demo dataset.

Trains a small ``cnn`` from ``yolol_tf.models`` briefly on the embedded demo dataset (64 px crops,
10 produce classes), saves it as a run folder, then exports it as SavedModel and TFLite float32, float16
and int8 through ``yolol_tf.inference.export.export`` (which checks each against the Keras model on the validation
crops). The baseline is the Keras model itself, measured in the same process: sizes and latencies are
printed as ratios against it. Latency is the median of single-image calls on this machine's CPU.

Run: ``python benchmarks/bench_export.py`` (about two minutes on two cores; ``--epochs`` for a better
trained model).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def train_demo_run(run: Path, *, epochs: int, width: int, size: int = 64) -> Path:
    """A run folder (best.keras, labels.json, config.yaml) with a cnn trained briefly on the demo data."""
    import keras

    from yolol_tf.data import open_data
    from yolol_tf.metrics import tune_thresholds
    from yolol_tf.models import build_model
    from yolol_tf.runs import Labels

    keras.utils.set_random_seed(0)
    source = open_data(None, size=size)
    info = source.info
    model = build_model("cnn", (size, size, 3), info.num_classes, width=width)
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3), loss=keras.losses.BinaryCrossentropy(from_logits=True)
    )
    start = time.perf_counter()
    model.fit(source.dataset("train", 32, training=True, augment=0.3, seed=0), epochs=epochs, verbose=0)
    print(
        f"trained cnn (width {width}) for {epochs} epochs on the demo data in {time.perf_counter() - start:.0f} s"
    )
    run.mkdir(parents=True, exist_ok=True)
    model.save(run / "best.keras")
    import numpy as np

    ys, ps = [], []
    for x, y in source.dataset("val", 64):
        ys.append(y.numpy())
        ps.append(keras.ops.convert_to_numpy(keras.ops.sigmoid(model(x, training=False))))
    thresholds = tune_thresholds(np.concatenate(ys), np.concatenate(ps))
    Labels(list(info.names), [float(t) for t in thresholds], "sigmoid", (size, size, 3)).save(
        run / "labels.json"
    )
    (run / "config.yaml").write_text(f"model: cnn\ndata: null\nsize: {size}\n")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--width", type=int, default=16, help="cnn width (its first stage's filters)")
    parser.add_argument("--runs", type=int, default=50, help="single-image calls per latency median")
    args = parser.parse_args()

    from yolol_tf.inference.export import export

    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        run = train_demo_run(Path(tmp) / "run", epochs=args.epochs, width=args.width)
        results = []
        for fmt, quantize in [
            ("savedmodel", "none"),
            ("tflite", "none"),
            ("tflite", "float16"),
            ("tflite", "int8"),
        ]:
            start = time.perf_counter()
            # force: a benchmark reports a large drop rather than stopping on it.
            r = export(run, fmt, quantize=quantize, force=True, latency_runs=args.runs, verbose=False)
            results.append((r, time.perf_counter() - start))

        base = results[0][0]
        keras_latency = sorted(r.keras_latency_ms for r, _ in results)[len(results) // 2]
        print(
            f"\n{'format':<18}{'size':>10}{'vs keras':>10}{'latency':>12}{'speed-up':>10}{'mAP':>8}"
            f"{'drop':>9}{'max|dp|':>10}{'export s':>10}"
        )
        print(
            f"{'keras (baseline)':<18}{base.keras_size_bytes / 1024:>8.1f}KB{1.0:>9.2f}x{keras_latency:>10.3f}ms"
            f"{1.0:>9.2f}x{base.keras_map:>8.4f}{'':>9}{'':>10}{'':>10}"
        )
        for r, seconds in results:
            name = r.format if r.quantize == "none" else f"{r.format} {r.quantize}"
            print(
                f"{name:<18}{r.size_bytes / 1024:>8.1f}KB{r.size_bytes / r.keras_size_bytes:>9.2f}x"
                f"{r.latency_ms:>10.3f}ms{keras_latency / r.latency_ms:>9.2f}x{r.export_map:>8.4f}"
                f"{r.keras_map - r.export_map:>+9.4f}{r.max_abs_diff:>10.1e}{seconds:>10.1f}"
            )
        print(
            f"\nchecked on {base.checked} demo validation crops; latency = median of {args.runs} single-image "
            f"calls (keras: traced tf.function) on {os.cpu_count()} CPU cores"
        )


if __name__ == "__main__":
    main()
