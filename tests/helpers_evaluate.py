"""Test helpers for evaluation: a tiny store written by hand, a tiny model that reads it, a run folder.

The store is written by ``tests.helpers_pipeline.write_store`` in the contract's format, and the package's
own reader (``yolol_tf.data.open_data``) opens it. Images encode their labels in colour
(class c present -> channel c % 3 bright), and the tiny model's weights are set to read that colour
back with some noise, so its figures are neither perfect nor chance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests import helpers_pipeline

NAMES = ["apple", "banana", "cherry"]
SIZE = 32


def make_split(n: int, num_classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images [n, SIZE, SIZE, 3], float32 multi-hot labels [n, num_classes]); every class occurs."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, num_classes)) < 0.4).astype(np.float32)
    labels[np.arange(n) % num_classes == 0, 0] = 1  # guaranteed positives for the first classes
    labels[: min(n, num_classes), : min(n, num_classes)] = np.eye(min(n, num_classes))
    # A random level per image and channel, so that averaging the pixels leaves the labels noisy.
    images = rng.uniform(0, 110, size=(n, 1, 1, 3)) + rng.integers(0, 40, size=(n, SIZE, SIZE, 3))
    for c in range(num_classes):
        images[..., c % 3] += 70 * labels[:, c, None, None]
    return np.clip(images, 0, 255).astype(np.uint8), labels


def write_store(
    root: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]], names: list[str] = NAMES
) -> Path:
    """Writes a store folder in the contract's layout and returns it."""
    samples = {split: list(zip(images, labels, strict=True)) for split, (images, labels) in splits.items()}
    return helpers_pipeline.write_store(root, samples, names, size=SIZE)


def make_model(num_classes: int = 3, *, seed: int = 0):
    """Input(32, 32, 3) -> GAP -> Dense logits, weights set to read each class's colour channel."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    model = keras.Model(inputs, logits, name="tiny")
    rng = np.random.default_rng(seed)
    kernel = np.zeros((3, num_classes), np.float32)
    for c in range(num_classes):
        kernel[c % 3, c] = 12.0
    kernel += rng.normal(0, 2.0, size=kernel.shape).astype(np.float32)
    model.get_layer("logits").set_weights([kernel, np.full(num_classes, -5.0, np.float32)])
    return model


def make_run(
    root: Path,
    model,
    *,
    store: Path | None,
    names: list[str] = NAMES,
    thresholds: list[float] | None = None,
    activation: str = "sigmoid",
    size: int = SIZE,
) -> Path:
    """A run folder as training leaves it (best.keras, labels.json, config.yaml naming the store).

    ``size`` is the config.yaml's size; older runs wrote the default 64 there whatever the model takes.
    """
    import yaml

    from yolol_tf.runs import BEST_MODEL, LABELS_FILE, Labels

    root.mkdir(parents=True, exist_ok=True)
    model.save(root / BEST_MODEL)
    thresholds = thresholds if thresholds is not None else [0.5] * len(names)
    Labels(list(names), list(thresholds), activation, (SIZE, SIZE, 3)).save(root / LABELS_FILE)
    config = {"model": "tiny", "data": str(store) if store is not None else None, "size": size}
    (root / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return root


def model_probs(model, images: np.ndarray, activation: str = "sigmoid") -> np.ndarray:
    """Probabilities computed straight from the model on arrays, for checking evaluate's figures."""
    logits = np.asarray(model.predict(images.astype(np.float32), verbose=0), dtype=np.float64)
    if activation == "softmax":
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return 1 / (1 + np.exp(-logits))


def write_sign_mnist_csv(path: Path, n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A tiny Sign-MNIST CSV (label, pixel1..pixel784); returns (uint8 images [n,28,28,1], labels [n])."""
    rng = np.random.default_rng(seed)
    letters = np.array([c for c in range(25) if c != 9])  # "J" never occurs, as in the real data
    labels = letters[rng.permutation(n) % len(letters)]  # every letter once before any repeats
    images = rng.integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)
    rows = [",".join(["label"] + [f"pixel{i}" for i in range(1, 785)])]
    rows += [",".join(map(str, [label, *image.ravel()])) for label, image in zip(labels, images, strict=True)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return images, labels


def make_sign_mnist_model(seed: int = 0, classes: int = 24):
    """Input(28, 28, 1) -> Flatten -> Dense(classes) logits, random weights."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    logits = keras.layers.Dense(classes, name="logits")(keras.layers.Flatten()(x))
    return keras.Model(inputs, logits, name="tiny_sign")
