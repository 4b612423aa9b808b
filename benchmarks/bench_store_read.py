"""Store read throughput through tf.data against what ResNet50 training consumes, in the same run.

    python benchmarks/bench_store_read.py [--size 64] [--seconds 5] [--steps 6]

Makes the demo dataset and prepares it into a store (in a temporary folder), then measures:
  * reads: crops/s out of ``yolol_tf.data.load(..., training=True)``, without and with augmentation;
  * consumed: crops/s of ``keras.applications.ResNet50(weights=None)`` training steps on random data
    of the same shape, batch 32;
and prints the ratio reads / consumed (goal: 10x or more, so the input never starves training).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_store(root: Path, size: int) -> Path:
    from yolol_tf.data.demo import demo_data

    yaml_path = demo_data(root / "demo")
    from yolol_tf.data.store import prepare

    return prepare(yaml_path, root / "store", size=size, progress=False)


def read_rate(store: Path, batch_size: int, augment: float, seconds: float) -> float:
    """Crops per second out of the training pipeline, after a warm-up."""
    from yolol_tf.data import load

    ds = load(store, "train", batch_size, training=True, augment=augment, seed=0, repeat=True)
    it = iter(ds)
    for _ in range(5):  # warm-up: threads start, buffers fill
        next(it)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        images, _ = next(it)
        count += int(images.shape[0])
    return count / (time.perf_counter() - start)


def train_rate(size: int, num_classes: int, batch_size: int, steps: int) -> float:
    """Crops per second of ResNet50 training steps on random data."""
    import keras
    import numpy as np

    model = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3), classes=num_classes,
                                        classifier_activation=None)  # fmt: skip
    model.compile(optimizer="adam", loss=keras.losses.BinaryCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch_size, size, size, 3)).astype("float32")
    y = (rng.random((batch_size, num_classes)) < 0.2).astype("float32")
    for _ in range(2):  # compile and warm up
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="crop side in pixels")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0, help="time per read measurement")
    parser.add_argument("--steps", type=int, default=6, help="ResNet50 training steps timed")
    args = parser.parse_args()

    import tensorflow as tf

    from yolol_tf.data import read_info

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        store = make_store(Path(tmp), args.size)
        info = read_info(store)
        print(f"store: {info.counts} crops of {args.size}x{args.size}, {info.num_classes} classes "
              f"(demo data + prepare: {time.perf_counter() - start:.1f} s)")  # fmt: skip
        plain = read_rate(store, args.batch_size, 0.0, args.seconds)
        augmented = read_rate(store, args.batch_size, 0.5, args.seconds)
    consumed = train_rate(args.size, info.num_classes, args.batch_size, args.steps)
    device = "GPU" if tf.config.list_physical_devices("GPU") else f"CPU ({os.cpu_count()} cores)"
    print(f"device: {device}, batch {args.batch_size}")
    print(f"store reads, no augmentation:   {plain:10.0f} crops/s")
    print(f"store reads, augment=0.5:       {augmented:10.0f} crops/s")
    print(f"ResNet50 training consumes:     {consumed:10.0f} crops/s")
    print(f"ratio reads/consumed: {plain / consumed:.1f}x plain, {augmented / consumed:.1f}x augmented "
          f"(goal: 10x or more)")  # fmt: skip


if __name__ == "__main__":
    main()
