"""Training benchmark: images/s per model, input-pipeline stall, and demo-dataset mAP against a linear model.

    python benchmarks/bench_train.py            # throughput of all models, quality of cnn vs linear
    python benchmarks/bench_train.py --quick    # fewer steps and epochs (a smoke run)
    python benchmarks/bench_train.py --quality dense,cnn,resnet50   # train each demo preset
    python benchmarks/bench_train.py --ops --quality ''   # what each augmentation op costs per batch

Throughput: steady-state training steps of each model's demo preset, fed (a) from the store pipeline
(shuffle, augmentation, prefetch) and (b) from one cached in-memory batch repeated; the stall share is
``1 - time(b) / time(a)``, the part of a step the model waits for data (goal: under 5%). The feeds take turns
for five rounds of one ~1.5 s epoch each (``--seconds``), each between two runs of the cached batch, and
each figure is the median over rounds of median step times, so that a noisy machine's drift cancels. "no
aug" is the same with augmentation off, to tell reading from augmenting; "no XLA" runs the same
augmentation as a plain graph; "streamed" reads the files every epoch rather than holding the split in
memory; "before" is the previous augmentation (kept below as ``legacy_augment_batch``) on the streamed
store, the baseline, measured in the same process. On a 2-core CPU the pipeline and the model share the
same cores, so augmentation work shows up as stall.
Ops (``--ops``): milliseconds per batch of each augmentation step at each model's size and batch, run
alone, as a share of the whole augmentation.
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


def legacy_augment_batch(images, seed, strength: float):
    """The augmentation before RandAugment (the baseline): flip, rotation, zoom, shift on the float batch
    (bilinear), then brightness, contrast and saturation on every sample."""
    import math

    import tensorflow as tf

    strength = float(min(strength, 1.0))
    seed = tf.cast(seed, tf.int64)
    shape = tf.shape(images)
    batch, size = shape[0], tf.cast(shape[1], tf.float32)
    geo_seed, b_seed, c_seed, s_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    seeds = tf.random.experimental.stateless_split(geo_seed, 4)
    flip = tf.where(tf.random.stateless_uniform([batch], seeds[0]) < 0.5, -1.0, 1.0)
    angle = tf.random.stateless_uniform([batch], seeds[1], -1.0, 1.0) * (math.radians(15) * strength)
    zoom = 1.0 + tf.random.stateless_uniform([batch], seeds[2], -1.0, 1.0) * (0.15 * strength)
    shift = tf.random.stateless_uniform([batch, 2], seeds[3], -1.0, 1.0) * (0.1 * strength) * size
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    a0, a1, b0, b1 = cos * flip, -sin, sin * flip, cos
    c = (size - 1.0) / 2.0
    zeros = tf.zeros_like(a0)
    transforms = tf.stack([a0, a1, c - a0 * c - a1 * c - shift[:, 0], b0, b1, c - b0 * c - b1 * c - shift[:, 1],
                           zeros, zeros], axis=1)  # fmt: skip
    x = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.float32), transforms=transforms, output_shape=shape[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT",
    )  # fmt: skip
    delta = tf.random.stateless_uniform([batch, 1, 1, 1], b_seed, -1.0, 1.0) * (0.25 * 255 * strength)
    contrast = 1.0 + tf.random.stateless_uniform([batch, 1, 1, 1], c_seed, -1.0, 1.0) * (0.4 * strength)
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    x = (x - mean) * contrast + mean + delta
    saturation = 1.0 + tf.random.stateless_uniform([batch, 1, 1, 1], s_seed, -1.0, 1.0) * (0.4 * strength)
    grey = tf.reduce_sum(x * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)
    x = (x - grey) * saturation + grey
    return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 255.0)), tf.uint8)


def sorting_augment(images, seed, strength: float):
    """Today's augmentation with the ops of each sample picked by a double argsort, as before ``_ranks``
    (the same picks); compiled by XLA, as ``augment_batch`` is."""
    import tensorflow as tf

    from yolol_tf.data import augment as aug

    ranks = aug._ranks
    aug._ranks = lambda keys: tf.argsort(tf.argsort(keys, axis=1), axis=1)
    try:  # traced once, with the sort in place
        return aug._augment(images, seed, strength)
    finally:
        aug._ranks = ranks


def _datasets(source, batch: int, augment: float) -> dict:
    """The store pipelines compared: in memory or streamed, new or legacy augmentation, or none."""
    import tensorflow as tf

    from yolol_tf.data import augment as augment_lib
    from yolol_tf.data import pipeline

    def load(strength, cache=True):
        saved = pipeline.CACHE_BYTES
        pipeline.CACHE_BYTES = saved if cache else 0
        try:
            return source.dataset("train", batch, training=True, augment=strength, seed=0,
                                  drop_remainder=True, repeat=True)  # fmt: skip
        finally:
            pipeline.CACHE_BYTES = saved

    def graph_augment(images, seed, strength):  # the same augmentation, not compiled by XLA
        return augment_lib._augment(images, tf.cast(seed, tf.int64), strength)

    legacy = augment_lib.augment_dataset(load(0.0, cache=False), augment, 0, fn=legacy_augment_batch)
    no_xla = augment_lib.augment_dataset(load(0.0), augment, 0, fn=graph_augment)
    return {"pipeline": load(augment), "plain": load(0.0), "no_xla": no_xla.prefetch(-1),
            "streamed": load(augment, cache=False), "before": legacy.prefetch(-1)}  # fmt: skip


def throughput(model_name: str, seconds: float, augment: float, rounds: int = 5) -> dict:
    """Step time fed from each store pipeline and from a cached batch, and the stall shares.

    The feeds take turns, ``rounds`` times, with a run of the cached batch before the first and after each
    feed; each run is one epoch of about ``seconds`` (its steps set from a first cached run). A run's step
    time is the median of its step intervals after the first few (buffers filling), robust to a moment's
    interruption by another process; a feed's stall in a round is against the mean of the cached runs
    just before and after it, and the figure reported is the median over rounds, so that the machine's
    drift over minutes cancels.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from yolol_tf.data import open_data
    from yolol_tf.models import build_model
    from yolol_tf.training import compile_model

    config = load_preset(model_name, mixed_precision="off", jit=False)
    source = open_data(None, size=config.size)
    info = source.info
    keras.utils.set_random_seed(0)
    model = build_model(config.model, info.image_shape, info.num_classes, **config.model_options)
    compile_model(model, config, info, steps_per_epoch=100, jit_compile=False)
    datasets = _datasets(source, config.batch_size, augment)
    cached = tf.data.Dataset.from_tensors(next(iter(datasets["pipeline"]))).repeat()

    class StepTimer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

    def step_time(ds, steps: int) -> float:
        timer = StepTimer()
        timer.ends = []
        model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[timer], shuffle=False)
        return float(np.median(np.diff(timer.ends)[5:]))

    step_time(cached, 10)  # traces the training step
    steps = max(30, min(3000, round(seconds / step_time(cached, 30))))
    result = {"model": model_name, "size": config.size, "batch": config.batch_size,
              "params": model.count_params(), "steps": steps, "rounds": rounds}  # fmt: skip
    stalls: dict[str, list[float]] = {name: [] for name in datasets}
    cached_steps, pipeline_steps, ratios = [], [], []
    for _ in range(rounds):
        # Each feed between two cached runs, against their mean: under a drift of the machine's speed the
        # mean of the runs before and after is what the cached batch would have taken in between.
        previous, t, bases = step_time(cached, steps), {}, {}
        for name, ds in datasets.items():
            t[name] = step_time(ds, steps)
            after = step_time(cached, steps)
            bases[name], previous = (previous + after) / 2, after
            stalls[name].append(max(0.0, 1.0 - bases[name] / t[name]))
        cached_steps.append(bases["pipeline"])
        pipeline_steps.append(t["pipeline"])
        ratios.append(t["before"] / t["pipeline"])
    result["images_per_s"] = config.batch_size / float(np.median(pipeline_steps))
    result["images_per_s_cached"] = config.batch_size / float(np.median(cached_steps))
    for name, values in stalls.items():
        result[f"stall_{name}"] = float(np.median(values))
    result["speedup"] = float(np.median(ratios))
    return result


def op_costs(model_name: str, augment: float, repeats: int = 30) -> dict:
    """Milliseconds per batch of each augmentation step at the model's size and batch, run alone."""
    import numpy as np
    import tensorflow as tf

    from yolol_tf.data import augment as aug
    from yolol_tf.data import open_data

    config = load_preset(model_name)
    source = open_data(None, size=config.size)
    images, _ = next(iter(source.dataset("train", config.batch_size)))
    seed = tf.constant([1, 2], tf.int64)
    shape = tf.shape(images)
    side = tf.cast(shape[1], tf.float32)
    draws = aug._draws(seed, shape[0], augment)
    transforms = aug.affine_transforms(draws["flip"], draws["rotate"], draws["shear_x"], draws["shear_y"],
                                       tf.exp(draws["zoom"]), draws["translate_x"] * side,
                                       draws["translate_y"] * side, side, side)  # fmt: skip
    colour_args = aug._colour_args(images, draws)
    floats = tf.cast(images, tf.float32)

    def projective(x, interpolation):  # TensorFlow's own warp kernel, the one used before the gather
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=x, transforms=transforms, output_shape=shape[1:3], fill_value=tf.constant(0.0),
            interpolation=interpolation, fill_mode="REFLECT",
        )  # fmt: skip

    sorting = tf.function(sorting_augment, jit_compile=aug._xla_on_cpu() or None)
    steps = {
        "augment_batch (all)": lambda: aug.augment_batch(images, seed, augment),
        "  the same, ops picked by argsort (before)": lambda: sorting(images, seed, augment),
        "  the same, no XLA": lambda: aug._augment(images, seed, augment),
        "  draws + matrices": lambda: aug._colour_args(images, aug._draws(seed, shape[0], augment)),
        "  warp uint8 gather": lambda: aug.warp(images, transforms, "NEAREST"),
        "  colour matmul": lambda: aug.colour(images, *colour_args),
        "warp uint8 TF nearest": lambda: projective(images, "NEAREST"),
        "warp uint8 TF bilinear": lambda: projective(images, "BILINEAR"),
        "warp float32 bilinear": lambda: projective(floats, "BILINEAR"),
        "legacy augmentation": lambda: legacy_augment_batch(images, seed, augment),
    }
    fns = {name: tf.function(fn) for name, fn in steps.items()}
    for fn in fns.values():
        fn()  # trace
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):  # interleaved, so that load from other processes hits every step alike
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(5):
                out = fn()
            _ = out.numpy() if hasattr(out, "numpy") else out
            samples[name].append((time.perf_counter() - start) / 5 * 1000)
    return {name: float(np.min(v)) for name, v in samples.items()}


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
    parser.add_argument("--models", default="dense,cnn,resnet50,lite0", help="models to time")
    parser.add_argument("--augment", type=float, default=0.5, help="augmentation strength timed")
    parser.add_argument("--ops", action="store_true", help="time each augmentation step instead")
    parser.add_argument(
        "--seconds", type=float, default=1.5, help="length of each timed epoch of the stall measurement"
    )
    parser.add_argument("--rounds", type=int, default=5, help="turns of the feeds in the stall measurement")
    parser.add_argument("--quality", default="cnn", help="models to train on the demo data ('' = none)")
    parser.add_argument(
        "--epochs", type=int, default=None, help="cap on training epochs (default: the preset's)"
    )
    args = parser.parse_args()
    seconds = 0.2 if args.quick else args.seconds
    epochs = args.epochs or (2 if args.quick else None)

    from yolol_tf.device import detect_device

    print(f"device: {detect_device().name}; {os.cpu_count()} CPU cores visible")
    names = [m for m in args.models.split(",") if m]
    if args.ops:
        for name in names:
            costs = op_costs(name, args.augment)
            config = load_preset(name)
            total = costs["augment_batch (all)"]
            print(f"\n{name}: {config.size} px, batch {config.batch_size}, strength {args.augment}")
            for op, ms in costs.items():
                print(f"  {op:<42} {ms:7.3f} ms/batch {ms / total:6.2f}x")
    else:
        print(
            f"\nstall at augment {args.augment}: memory = split held in memory (new default), "
            "streamed = files read every epoch; before = legacy augmentation, streamed"
        )
        print(f"{'model':>9} {'size':>5} {'batch':>5} {'params':>11} {'img/s':>8} {'img/s cached':>13} "
              f"{'stall':>7} {'(no aug)':>9} {'(no XLA)':>9} {'streamed':>9} {'before':>7} {'speedup':>8}")  # fmt: skip
        for name in names:
            r = throughput(name, seconds, args.augment, args.rounds)
            print(f"{r['model']:>9} {r['size']:>5} {r['batch']:>5} {r['params']:>11,} {r['images_per_s']:>8.1f} "
                  f"{r['images_per_s_cached']:>13.1f} {r['stall_pipeline']:>7.1%} {r['stall_plain']:>9.1%} "
                  f"{r['stall_no_xla']:>9.1%} "
                  f"{r['stall_streamed']:>9.1%} {r['stall_before']:>7.1%} {r['speedup']:>7.2f}x")  # fmt: skip

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
