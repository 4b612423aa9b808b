"""Synchronized BatchNormalization on 2 logical CPUs under MirroredStrategy against the same layer on the
global batch, run in a fresh process (logical devices can only be set up before TensorFlow starts):

    python -m tests.support.batchnorm_mirrored

prints, as its last line, a JSON object: the replicas and the largest gaps in outputs, input gradients and
moving statistics.
"""

from __future__ import annotations

import json

import numpy as np


def check_synchronized_under_mirrored() -> dict:
    """Runs synchronized BN over 2 logical CPUs and the same layer over the global batch; returns the gaps."""
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


if __name__ == "__main__":
    print(json.dumps(check_synchronized_under_mirrored()))
