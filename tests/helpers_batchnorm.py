"""Helpers for the BatchNormalization tests: twin layers with shared weights, and the replica check."""

from __future__ import annotations

import numpy as np


def twin_layers(axis: int, dtype: str = "float32", **settings):
    """Returns (ours, keras') BatchNormalization with the same settings and the same random weights."""
    import keras

    from yolol_tf.models.layers import BatchNormalization

    ours = BatchNormalization(axis=axis, dtype=dtype, **settings)
    theirs = keras.layers.BatchNormalization(axis=axis, dtype=dtype, **settings)
    return ours, theirs


def copy_weights(*layers, seed: int = 0) -> None:
    """Gives the layers the same non-trivial gamma, beta and moving statistics (positive, around 1)."""
    rng = np.random.default_rng(seed)
    for variables in zip(*(layer.weights for layer in layers), strict=True):
        value = rng.uniform(0.5, 1.5, variables[0].shape).astype("float32")
        for variable in variables:
            variable.assign(value)


def check_synchronized_under_mirrored() -> dict:
    """Runs synchronized BN over 2 logical CPUs and the same layer over the global batch; returns the gaps.

    Must run in a fresh process: logical devices can only be configured before TensorFlow starts.
    """
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from yolol_tf.models.layers import BatchNormalization

    rng = np.random.default_rng(0)
    # Replicas see differently distributed halves, so local moments differ a lot from global ones.
    images = np.concatenate([rng.normal(0, 1, (4, 5, 5, 3)), rng.normal(3, 2, (4, 5, 5, 3))]).astype(
        "float32"
    )
    weights = rng.normal(size=images.shape).astype("float32")

    reference = BatchNormalization(momentum=0.5, synchronized=True)
    with tf.GradientTape() as tape:
        x = tf.constant(images)
        tape.watch(x)
        expected = reference(x, training=True)
        loss = tf.reduce_sum(expected * weights)
    expected_grad = tape.gradient(loss, x)

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        layer = BatchNormalization(momentum=0.5, synchronized=True)
        layer.build(images.shape)
    dataset = tf.data.Dataset.from_tensor_slices((images, weights)).batch(8)
    inputs = next(iter(strategy.experimental_distribute_dataset(dataset)))

    @tf.function
    def step(batch):
        def replica_fn(x, w):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                local_loss = tf.reduce_sum(y * w)
            return y, tape.gradient(local_loss, x)

        return strategy.run(replica_fn, args=batch)

    outputs, grads = step(inputs)
    got = np.concatenate([t.numpy() for t in strategy.experimental_local_results(outputs)])
    got_grad = np.concatenate([t.numpy() for t in strategy.experimental_local_results(grads)])
    return {
        "replicas": strategy.num_replicas_in_sync,
        "output_gap": float(np.abs(got - expected.numpy()).max()),
        "grad_gap": float(np.abs(got_grad - expected_grad.numpy()).max()),
        "mean_gap": float(np.abs(layer.moving_mean.numpy() - reference.moving_mean.numpy()).max()),
        "variance_gap": float(
            np.abs(layer.moving_variance.numpy() - reference.moving_variance.numpy()).max()
        ),
    }
