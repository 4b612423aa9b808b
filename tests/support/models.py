"""The tiny model the tests train, export and evaluate, a brief fit, and the run folder that holds a model."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from tests.support.data import crops

BODIES = ("conv", "colour", "vector")


def tiny_model(
    num_classes: int = 3,
    input_shape: tuple[int, ...] = (32, 32, 3),
    *,
    body: str = "conv",
    extra_layer: Any = None,
    seed: int = 0,
):
    """A tiny uncompiled classifier, the contract's model shape in miniature: raw inputs in, one logit per
    class out (from the layer named "logits").

    Args:
        num_classes: output units.
        input_shape: one input's shape: (side, side, channels) of raw pixels, or (features,) for "vector".
        body: what lies between the input and the logits.
            "conv": Rescaling -> Conv2D(8) -> Keras BatchNormalization -> ReLU -> pooling. Learns the
            "centre" crops in a few steps (:func:`train_briefly`) and converts to TFLite builtins.
            "colour": Rescaling -> pooling, the logits' weights set to read class k from channel k % 3 with
            some noise: on "channel" crops its figures are neither perfect nor chance, untrained.
            "vector": Dense(16) -> our synchronized BatchNormalization -> ReLU, on feature vectors, for
            the distribution tests.
        extra_layer: a layer applied after the rescaling (not for "vector"), to put an op into the graph.
        seed: the seed of the initial weights (and of the colour weights' noise).
    """
    import keras

    if body not in BODIES:
        raise ValueError(f"body must be one of {BODIES}. Received: body={body!r}")
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape, dtype="float32", name="pixels")
    if body == "vector":
        from yolol_tf.models.layers import BatchNormalization

        x = keras.layers.Dense(16, name="dense")(inputs)
        x = BatchNormalization(synchronized=True, name="bn")(x)
        x = keras.layers.Activation("relu")(x)
    else:
        x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
        if extra_layer is not None:
            x = extra_layer(x)
        if body == "conv":
            x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
            x = keras.layers.BatchNormalization()(x)
            x = keras.layers.ReLU()(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(x), name="tiny")
    if body == "colour":
        rng = np.random.default_rng(seed)
        kernel = np.zeros((input_shape[-1], num_classes), np.float32)
        for k in range(num_classes):
            kernel[k % input_shape[-1], k] = 12.0
        kernel += rng.normal(0, 2.0, size=kernel.shape).astype(np.float32)
        model.get_layer("logits").set_weights([kernel, np.full(num_classes, -5.0, np.float32)])
    return model


def train_briefly(model, *, steps: int = 60, seed: int = 0):
    """Fits ``model`` (32 px, 3 classes) briefly on "centre" crops so its mAP means something; returns it."""
    import keras

    keras.utils.set_random_seed(seed)
    x, y = crops(256, seed=seed + 1)
    model.compile(
        optimizer=keras.optimizers.Adam(0.03), loss=keras.losses.BinaryCrossentropy(from_logits=True)
    )
    model.fit(x.astype(np.float32), y, batch_size=32, epochs=max(1, steps // 8), verbose=0)
    return model


def write_run(
    root: str | os.PathLike,
    model,
    data: str | os.PathLike,
    *,
    val: str | os.PathLike | None = None,
    names: list[str] | None = None,
    thresholds: list[float] | None = None,
    activation: str = "sigmoid",
    size: int | None = None,
) -> Path:
    """A run folder as training leaves it, with what evaluate, export and predict read: best.keras,
    labels.json and config.yaml.

    Args:
        root: the folder to create.
        model: the Keras model saved as best.keras.
        data: the data config.yaml names (a store, a CSV).
        val: a Sign-MNIST test CSV config.yaml names.
        names: class names for labels.json; default the store's.
        thresholds: per-class thresholds (default 0.5).
        activation: "sigmoid" or "softmax".
        size: config.yaml's size; default the model's input side (older runs wrote 64 whatever it took).
    """
    import yaml

    from yolol_tf.runs import BEST_MODEL, CONFIG_FILE, LABELS_FILE, Labels

    root = Path(root)
    if names is None:
        names = json.loads((Path(data) / "dataset.json").read_text(encoding="utf-8"))["names"]
    input_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    root.mkdir(parents=True, exist_ok=True)
    model.save(root / BEST_MODEL)
    thresholds = list(thresholds) if thresholds is not None else [0.5] * len(names)
    Labels(list(names), thresholds, activation, input_shape).save(root / LABELS_FILE)
    config = {"model": "tiny", "data": str(data), "size": size or input_shape[0]}
    if val is not None:
        config["val"] = str(val)
    (root / CONFIG_FILE).write_text(yaml.safe_dump(config), encoding="utf-8")
    return root


def random_batch(shape: tuple[int, ...], num_classes: int, batch: int = 4, seed: int = 0):
    """Raw-pixel images (float32 0..255) and multi-hot float32 labels, for a model's first steps."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch, *shape)).astype("float32")
    labels = (rng.uniform(size=(batch, num_classes)) < 0.3).astype("float32")
    return images, labels


def losses_over_steps(model, images, labels, steps: int = 4, learning_rate: float = 1e-3) -> list[float]:
    """Compiles the model with Adam and binary cross-entropy on logits; returns the loss of each step.

    Runs eagerly: for a handful of tiny steps, tracing and optimising a ResNet-50 graph costs far more.
    """
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        run_eagerly=True,
    )
    return [float(np.asarray(model.train_on_batch(images, labels))) for _ in range(steps)]
