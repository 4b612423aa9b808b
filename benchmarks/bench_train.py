"""Training benchmark: images/s per model, input-pipeline stall, and demo-dataset mAP against a linear model.

    python benchmarks/bench_train.py            # throughput of all models, quality of cnn vs linear
    python benchmarks/bench_train.py --quick    # fewer steps and epochs (a smoke run)
    python benchmarks/bench_train.py --quality dense,cnn,resnet50   # train each demo preset

Throughput: steady-state training steps (after warm-up) timed twice per model, fed (a) from the store
pipeline (shuffle, augmentation, prefetch) and (b) from one cached in-memory batch repeated; the stall
share is ``1 - time(b) / time(a)``, the part of a step the model waits for data (goal: under 5%); "no aug"
is the same with augmentation off, to tell reading from augmenting. On a 2-core CPU the pipeline and the
model share the same cores, so augmentation work shows up as stall.
Quality: each model trained with its ``experiments/demo-<model>.yaml`` (epochs capped), test-split mAP,
next to a linear model (logistic regression on raw pixels) trained on the same crops the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_preset(model: str, **overrides):
    from yolol_tf import config as config_lib
    from yolol_tf.training import TrainConfig

    preset = ROOT / "experiments" / f"demo-{model}.yaml"
    return config_lib.resolve(
        TrainConfig, preset if preset.is_file() else None, {"model": model, **overrides}
    )


class EpochTimer:
    """Wall time of each epoch, via a Keras callback."""

    def __init__(self):
        import keras

        timer = self

        class _CB(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                timer.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                timer.times.append(time.perf_counter() - timer.start)

        self.times: list[float] = []
        self.callback = _CB()


def throughput(model_name: str, steps: int) -> dict:
    """Images/s from the store pipeline and from a cached batch, and the stall share."""
    import keras
    import tensorflow as tf

    from yolol_tf.data import open_data
    from yolol_tf.models import build_model
    from yolol_tf.training import compile_model

    config = load_preset(model_name, mixed_precision="off", jit=False)
    source = open_data(None, size=config.size)
    info = source.info
    keras.utils.set_random_seed(0)
    model = build_model(config.model, info.image_shape, info.num_classes, **config.model_options)
    compile_model(model, config, info, steps_per_epoch=steps, jit_compile=False)
    pipeline = source.dataset("train", config.batch_size, training=True, augment=config.augment, seed=0,
                              drop_remainder=True, repeat=True)  # fmt: skip
    plain = source.dataset("train", config.batch_size, training=True, augment=0.0, seed=0,
                           drop_remainder=True, repeat=True)  # fmt: skip
    cached = tf.data.Dataset.from_tensors(next(iter(pipeline))).repeat()
    result = {"model": model_name, "size": config.size, "batch": config.batch_size,
              "params": model.count_params()}  # fmt: skip
    runs = (("cached", cached), ("pipeline", pipeline), ("plain", plain), ("cached2", cached))
    for name, ds in runs:
        timer = EpochTimer()
        # Epoch 1 traces and warms up; the fastest later epoch is the steady state least disturbed by
        # other processes on the machine.
        model.fit(ds, steps_per_epoch=steps, epochs=3, verbose=0, callbacks=[timer.callback], shuffle=False)
        result[name] = min(timer.times[1:]) / steps
    cached_step = min(result.pop("cached"), result.pop("cached2"))  # either side of the pipeline run
    result["images_per_s"] = config.batch_size / result["pipeline"]
    result["images_per_s_cached"] = config.batch_size / cached_step
    result["stall"] = max(0.0, 1.0 - cached_step / result.pop("pipeline"))
    result["stall_no_augment"] = max(0.0, 1.0 - cached_step / result.pop("plain"))
    return result


def linear_baseline(config, epochs: int) -> float:
    """Test mAP of logistic regression on raw pixels, trained like the models (same data, loss, optimizer)."""
    import keras

    from yolol_tf import metrics
    from yolol_tf.data import open_data
    from yolol_tf.training import compile_model
    from yolol_tf.training.callbacks import predict_probs

    source = open_data(None, size=config.size)
    info = source.info
    keras.utils.set_random_seed(0)
    inputs = keras.Input(info.image_shape)
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(info.num_classes, name="logits")(x), name="linear")
    steps = -(-info.counts["train"] // config.batch_size)
    compile_model(model, config, info, steps_per_epoch=steps, jit_compile=False)
    train_ds = source.dataset(
        "train", config.batch_size, training=True, augment=config.augment, seed=0, repeat=True
    )
    model.fit(train_ds, steps_per_epoch=steps, epochs=epochs, verbose=0, shuffle=False)
    y_true, y_prob = predict_probs(model, source.dataset("test", 128), "sigmoid")
    return float(metrics.mean_average_precision(y_true, y_prob))


def quality(model_name: str, epochs: int | None, out: Path) -> dict:
    """Trains the demo preset (epochs capped) and returns its figures from metrics.json."""
    from yolol_tf.training import train

    config = load_preset(model_name, out=str(out / model_name), mixed_precision="off", jit=False)
    if epochs is not None:
        config = load_preset(model_name, out=str(out / model_name), epochs=min(epochs, config.epochs),
                             mixed_precision="off", jit=False)  # fmt: skip
    start = time.perf_counter()
    run = train(config, verbose=0)
    seconds = time.perf_counter() - start
    report = json.loads((run / "metrics.json").read_text())
    return {"model": model_name, "epochs": config.epochs, "size": config.size, "seconds": seconds,
            "val_map": report["val"]["map"], "test_map": report["test"]["map"],
            "test_f1_macro": report["test"]["f1_macro"], "config": config}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps and epochs: a smoke run")
    parser.add_argument("--models", default="dense,cnn,resnet50", help="models to time")
    parser.add_argument("--quality", default="cnn", help="models to train on the demo data ('' = none)")
    parser.add_argument(
        "--epochs", type=int, default=None, help="cap on training epochs (default: the preset's)"
    )
    args = parser.parse_args()
    steps = 3 if args.quick else 15
    epochs = args.epochs or (2 if args.quick else None)

    from yolol_tf.device import detect_device

    print(f"device: {detect_device().name}; {os.cpu_count()} CPU cores visible")
    print(
        f"\n{'model':>9} {'size':>5} {'batch':>5} {'params':>11} {'img/s':>8} {'img/s cached':>13} {'stall':>7} {'(no aug)':>9}"
    )
    for name in [m for m in args.models.split(",") if m]:
        r = throughput(name, steps)
        print(f"{r['model']:>9} {r['size']:>5} {r['batch']:>5} {r['params']:>11,} {r['images_per_s']:>8.1f} "
              f"{r['images_per_s_cached']:>13.1f} {r['stall']:>7.1%} {r['stall_no_augment']:>9.1%}")  # fmt: skip

    models = [m for m in args.quality.split(",") if m]
    if not models:
        return
    print(
        f"\n{'model':>9} {'epochs':>6} {'size':>5} {'seconds':>8} {'val mAP':>8} {'test mAP':>9} {'test F1':>8}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for name in models:
            r = quality(name, epochs, Path(tmp))
            results.append(r)
            print(f"{r['model']:>9} {r['epochs']:>6} {r['size']:>5} {r['seconds']:>8.0f} {r['val_map']:>8.3f} "
                  f"{r['test_map']:>9.3f} {r['test_f1_macro']:>8.3f}")  # fmt: skip
        for r in results:
            linear = linear_baseline(r["config"], r["epochs"])
            print(f"linear baseline on the {r['model']} crops ({r['size']} px, {r['epochs']} epochs): test mAP "
                  f"{linear:.3f}; {r['model']} / linear = {r['test_map'] / linear:.2f}x, "
                  f"{(1 - linear) / max(1e-9, 1 - r['test_map']):.1f}x fewer ranking errors (1 - mAP)")  # fmt: skip


if __name__ == "__main__":
    main()
