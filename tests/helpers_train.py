"""Helpers for training tests: a tiny learnable store written in the store format, and tiny configs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.helpers_pipeline import write_store

COLOURS = [(230, 40, 40), (40, 200, 40), (40, 80, 230), (230, 200, 40)]


def tiny_sample(rng: np.random.Generator, size: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A grey crop with one coloured square per present class (1 or 2 classes): easy to learn."""
    image = np.full((size, size, 3), 114, np.uint8) + rng.integers(0, 20, (size, size, 3), dtype=np.uint8)
    label = np.zeros(num_classes, np.uint8)
    present = rng.choice(num_classes, size=int(rng.integers(1, 3)), replace=False)
    for c in present:
        label[c] = 1
        side = size // 3
        y, x = rng.integers(0, size - side, 2)
        image[y : y + side, x : x + side] = COLOURS[c % len(COLOURS)]
    return image, label


def write_tiny_store(
    root: str | os.PathLike,
    *,
    num_classes: int = 3,
    size: int = 32,
    counts: dict[str, int] | None = None,
    seed: int = 0,
) -> Path:
    """Writes a store (dataset.json, index.csv, shards) in the documented format; returns its folder."""
    counts = counts or {"train": 64, "val": 32, "test": 16}
    rng = np.random.default_rng(seed)
    samples = {split: [tiny_sample(rng, size, num_classes) for _ in range(n)] for split, n in counts.items()}
    return write_store(root, samples, [f"thing{c}" for c in range(num_classes)], size=size)


def tiny_config(store: str | os.PathLike, out: str | os.PathLike, **overrides):
    """A TrainConfig for a tiny cnn that trains in seconds on 2 CPU cores."""
    from yolol_tf.training import TrainConfig

    values = dict(
        model="cnn", model_options={"width": 8, "depths": (1,)}, data=str(store), size=32, epochs=1,
        batch_size=16, augment=0.0, out=str(out), patience=0, mixed_precision="off", jit=False,
    )  # fmt: skip
    values.update(overrides)
    return TrainConfig(**values)


def run_python(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter from the repository root (TensorFlow quiet, no GPU)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=Path(__file__).parents[1], env=env,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def run_cli(
    *args: str, cwd: str | os.PathLike | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Runs ``yolol-tf ARGS`` as a user would, returning its exit status and output."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    code = "import sys; from yolol_tf.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd or Path(__file__).parents[1], env=env,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def write_tiny_sign_mnist(path: str | os.PathLike, rows: int = 80, *, seed: int = 0) -> Path:
    """A Sign-MNIST-format CSV of 28x28 crops of three letters, each a bright bar at its own place."""
    rng = np.random.default_rng(seed)
    lines = ["label," + ",".join(f"pixel{i}" for i in range(1, 785))]
    for i in range(rows):
        label = (0, 1, 2)[i % 3]
        image = rng.integers(0, 60, (28, 28))
        image[label * 9 : label * 9 + 8, :] = 230
        lines.append(f"{label}," + ",".join(str(int(v)) for v in image.ravel()))
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path
