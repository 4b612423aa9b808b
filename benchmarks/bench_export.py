"""Size, single-image latency and mAP of every export format and mode on the demo dataset, for the cnn and
EfficientNet-Lite0.

Trains a small ``cnn`` from ``yolol_tf.models`` briefly on the embedded demo dataset (64 px crops,
10 produce classes), saves it as a run folder, then exports it as SavedModel, TFLite float32, float16
and int8, and ONNX through ``yolol_tf.inference.export.export`` (which checks each against the Keras model
on the validation crops). One more mode shows the int8 recovery at work: int8 with ``--max-drop`` set to
half what the fully quantised model lost, so that it fails and the quantisation debugger's worst layers
are kept in float until one passes (or, with ``force``, the attempt that lost least is reported). ``lite0``
is trained by ``yolol_tf.training.train`` with ``experiments/demo-lite0.yaml`` (ImageNet weights, the head
alone then the whole network; from scratch without the pretrained extra), its epochs and steps per epoch
capped by ``--lite0-epochs`` and ``--lite0-steps`` for a quick run, and exported the same way. The
baseline is each Keras model itself, measured in the same process: sizes and latencies are printed as
ratios against it. Latency is the median of single-image calls on this machine's CPU.

Run: ``python benchmarks/bench_export.py`` (a few minutes on two cores; ``--models cnn`` for the cnn alone,
``--epochs`` for a better trained cnn; ONNX needs ``pip install "yolol-tf[onnx]"``, else its row is
skipped).
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


LITE0_PRESET = Path(__file__).resolve().parent.parent / "experiments" / "demo-lite0.yaml"


def train_lite0_run(run: Path, *, epochs: int, steps: int | None) -> Path:
    """A run folder of lite0 trained with experiments/demo-lite0.yaml, epochs and steps capped."""
    import importlib.util

    from yolol_tf.models.weights import imagenet_lite0
    from yolol_tf.training import load_config, train

    preset = load_config(LITE0_PRESET)
    epochs = max(1, min(epochs, preset.epochs))
    overrides: dict = {"data": None, "out": str(run), "epochs": epochs, "steps_per_epoch": steps}
    options = dict(preset.model_options)
    if importlib.util.find_spec(imagenet_lite0.PACKAGE) is None:
        print(f"lite0: no ImageNet checkpoint ({imagenet_lite0.INSTALL}); trained from scratch")
        options.pop("weights", None)
        overrides["head_epochs"] = 0
    elif preset.head_epochs is not None:
        overrides["head_epochs"] = min(preset.head_epochs, epochs - 1)  # the whole network trains too
    overrides["model_options"] = options
    start = time.perf_counter()
    train(load_config(LITE0_PRESET, overrides), verbose=0)
    print(
        f"trained lite0 ({', '.join(f'{k}={v}' for k, v in options.items())}) for {epochs} epochs "
        f"x {steps or 'all'} steps on the demo data in {time.perf_counter() - start:.0f} s"
    )
    return run


def export_modes(run: Path, runs: int) -> list:
    """Every export mode of ``run``: (mode name, ExportResult, seconds)."""
    from yolol_tf.errors import UserError
    from yolol_tf.inference.export import export

    modes = [
        ("savedmodel", "none", {}),
        ("tflite", "none", {}),
        ("tflite", "float16", {}),
        ("tflite", "int8", {}),
        # --max-drop at half what full int8 lost: the recovery must halve the loss (set once int8 ran).
        ("tflite", "int8", {"max_drop": None, "out_name": "best.int8-strict.tflite"}),
        ("onnx", "none", {}),
    ]
    results = []
    for fmt, quantize, options in modes:
        options = dict(options)
        out = run / options.pop("out_name") if "out_name" in options else None
        if options.get("max_drop", 0) is None:
            full = next(r for name, r, _ in results if name == "tflite int8")
            options["max_drop"] = round(max(full.keras_map - full.export_map, 0.0) / 2, 5)
        start = time.perf_counter()
        try:
            # force: a benchmark reports a large drop rather than stopping on it.
            r = export(
                run, fmt, quantize=quantize, out=out, force=True, latency_runs=runs, verbose=False, **options
            )
        except UserError as e:  # ONNX without its packages
            print(f"skipped {fmt} {quantize}: {e.message}")
            continue
        mode = ("" if quantize == "none" else f" {quantize}") + (
            f" max-drop {options['max_drop']:.4f}" if "max_drop" in options else ""
        )
        results.append((f"{fmt}{mode}", r, time.perf_counter() - start))
    return results


def print_table(model: str, results: list, runs: int) -> None:
    """The table of one model's exports, against its Keras model, and what the int8 recovery did."""
    base = results[0][1]
    keras_latency = sorted(r.keras_latency_ms for _, r, _ in results)[len(results) // 2]
    print(
        f"\n{model:<8}{'format':<28}{'size':>10}{'vs keras':>10}{'latency':>12}{'speed-up':>10}{'mAP':>8}"
        f"{'drop':>9}{'max|dp|':>10}{'export s':>10}"
    )
    print(
        f"{model:<8}{'keras (baseline)':<28}{base.keras_size_bytes / 1024:>8.1f}KB{1.0:>9.2f}x"
        f"{keras_latency:>10.3f}ms{1.0:>9.2f}x{base.keras_map:>8.4f}{'':>9}{'':>10}{'':>10}"
    )
    for name, r, seconds in results:
        print(
            f"{model:<8}{name:<28}{r.size_bytes / 1024:>8.1f}KB{r.size_bytes / r.keras_size_bytes:>9.2f}x"
            f"{r.latency_ms:>10.3f}ms{keras_latency / r.latency_ms:>9.2f}x{r.export_map:>8.4f}"
            f"{r.keras_map - r.export_map:>+9.4f}{r.max_abs_diff:>10.1e}{seconds:>10.1f}"
        )
    print(
        f"checked on {base.checked} demo validation crops; latency = median of {runs} single-image "
        f"calls (keras: traced tf.function) on {os.cpu_count()} CPU cores"
    )
    for name, r, _ in results:
        if r.recovery is not None:
            rec = r.recovery
            print(
                f"\n{model} {name}: fully int8 {rec.full_int8_size_bytes / 1024:.1f} KB, "
                f"{rec.full_int8_latency_ms:.3f} ms, mAP {rec.full_int8_map:.4f}; "
                f"{len(rec.attempts)} selection(s) of float layers tried{' (FORCED)' if r.forced else ''}"
            )
            print("  worst ops (rmse/scale): " + ", ".join(f"{n} {e:.2f}" for n, e in rec.ranking[:5]))
            for layers, size, emap, passed in rec.attempts:
                names = ", ".join(layers[:3]) + (f", ... ({len(layers) - 3} more)" if len(layers) > 3 else "")
                print(
                    f"  {len(layers):>3} in float: {size / 1024:7.1f} KB, mAP {emap:.4f}, "
                    f"{'passes' if passed else 'fails '}  {names}"
                )
            if r.float_layers:
                print(
                    f"  shipped: {', '.join(r.float_layers)}; cost {r.size_cost_bytes:+d} B, "
                    f"{r.latency_cost_ms:+.3f} ms against fully int8"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="cnn,lite0", help="comma-separated: cnn, lite0")
    parser.add_argument("--epochs", type=int, default=3, help="cnn epochs")
    parser.add_argument("--width", type=int, default=16, help="cnn width (its first stage's filters)")
    parser.add_argument(
        "--lite0-epochs", type=int, default=3, help="cap on demo-lite0.yaml's epochs (2 of the head alone)"
    )
    parser.add_argument(
        "--lite0-steps", type=int, default=10, help="lite0 steps per epoch (0: one pass over the data)"
    )
    parser.add_argument("--runs", type=int, default=50, help="single-image calls per latency median")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - {"cnn", "lite0"})
    if unknown:
        parser.error(f"--models takes cnn and lite0. Received: {', '.join(unknown)}")

    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        tables = []
        for model in models:
            if model == "cnn":
                run = train_demo_run(Path(tmp) / "cnn", epochs=args.epochs, width=args.width)
            else:
                run = train_lite0_run(
                    Path(tmp) / "lite0", epochs=args.lite0_epochs, steps=args.lite0_steps or None
                )
            tables.append((model, export_modes(run, args.runs)))
        for model, results in tables:
            print_table(model, results, args.runs)


if __name__ == "__main__":
    main()
