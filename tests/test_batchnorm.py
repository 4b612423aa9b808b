"""Our BatchNormalization against keras.layers.BatchNormalization, under replicas, and through TFLite."""

from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from yolol_tf.models.layers import BatchNormalization  # noqa: E402

# Half precision rounds the output to ~3 significant digits; float32 results agree to rounding.
TOLERANCE = {"float32": 1e-5, "mixed_float16": 1e-2, "mixed_bfloat16": 5e-2}


def twin_layers(axis: int, dtype: str = "float32", **settings):
    """Returns (ours, keras') BatchNormalization with the same settings."""
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


def _run_steps(ours, theirs, shape, dtype, steps=4):
    """Trains both layers on the same batches, comparing outputs and input/weight gradients at each step."""
    rng = np.random.default_rng(1)
    tolerance = TOLERANCE[dtype]
    # A random projection of the output, so every gradient (gamma's included) is far from zero.
    projection = tf.constant(rng.normal(size=shape).astype("float32"))
    for step in range(steps):
        x = tf.constant(rng.normal(2.0 + step, 3.0, shape).astype("float32"))
        if dtype != "float32":
            x = tf.cast(x, ours.compute_dtype)
        results = []
        for layer in (ours, theirs):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                loss = tf.reduce_sum(tf.cast(y, "float32") * projection)
            results.append((y, tape.gradient(loss, [x, *layer.trainable_weights])))
        (y_ours, grads_ours), (y_theirs, grads_theirs) = results
        assert y_ours.dtype == y_theirs.dtype
        np.testing.assert_allclose(
            y_ours.numpy().astype("float32"),
            y_theirs.numpy().astype("float32"),
            rtol=tolerance,
            atol=tolerance,
        )
        for g_ours, g_theirs in zip(grads_ours, grads_theirs, strict=True):
            scale = np.abs(g_theirs.numpy().astype("float32")).max() + 1.0
            np.testing.assert_allclose(
                g_ours.numpy().astype("float32") / scale,
                g_theirs.numpy().astype("float32") / scale,
                atol=tolerance,
            )
    return x


@pytest.mark.parametrize("dtype", ["float32", "mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize(
    ("axis", "shape"),
    [(-1, (6, 5, 5, 4)), (1, (6, 4, 5, 5)), (3, (6, 5, 5, 4)), (-1, (8, 7)), (-1, (1, 1, 1, 4))],
)
def test_matches_keras_in_training_and_inference(axis, shape, dtype):
    ours, theirs = twin_layers(axis, dtype=dtype, momentum=0.8, epsilon=1e-3)
    ours.build(shape)
    theirs.build(shape)
    copy_weights(ours, theirs)
    x = _run_steps(ours, theirs, shape, dtype)

    # Several steps of moving statistics, then inference with them.
    for name in ("moving_mean", "moving_variance"):
        assert getattr(ours, name).dtype == "float32"
        np.testing.assert_allclose(
            getattr(ours, name).numpy(), getattr(theirs, name).numpy(), rtol=1e-5, atol=1e-5
        )
    tolerance = TOLERANCE[dtype]
    np.testing.assert_allclose(
        ours(x, training=False).numpy().astype("float32"),
        theirs(x, training=False).numpy().astype("float32"),
        rtol=tolerance,
        atol=tolerance,
    )


@pytest.mark.parametrize("settings", [{"center": False}, {"scale": False}, {"center": False, "scale": False}])
def test_matches_keras_without_center_or_scale(settings):
    ours, theirs = twin_layers(-1, momentum=0.5, **settings)
    ours.build((4, 3, 3, 2))
    theirs.build((4, 3, 3, 2))
    assert len(ours.weights) == len(theirs.weights)
    copy_weights(ours, theirs)
    _run_steps(ours, theirs, (4, 3, 3, 2), "float32", steps=2)


def test_frozen_layer_normalises_with_moving_statistics():
    layer = BatchNormalization()
    x = tf.random.normal((4, 3, 3, 2), mean=5.0)
    layer(x, training=True)
    before = layer.moving_mean.numpy().copy()
    layer.trainable = False
    np.testing.assert_allclose(layer(x, training=True).numpy(), layer(x, training=False).numpy())
    np.testing.assert_array_equal(layer.moving_mean.numpy(), before)


def test_config_round_trip_and_registration():
    layer = BatchNormalization(
        axis=1, momentum=0.9, epsilon=1e-4, center=False, gamma_regularizer="l2", synchronized=True, name="bn"
    )
    config = layer.get_config()
    clone = BatchNormalization.from_config(config)
    assert clone.get_config() == config
    assert keras.saving.get_registered_name(BatchNormalization) == "yolol_tf>BatchNormalization"
    assert keras.saving.get_registered_object("yolol_tf>BatchNormalization") is BatchNormalization


def test_synchronized_matches_global_batch_under_mirrored_strategy(run_python):
    # Logical devices must be set before TensorFlow starts, hence a fresh process.
    done = run_python("-m", "tests.support.batchnorm_mirrored")
    assert done.returncode == 0, done.stderr[-2000:]
    gaps = json.loads(done.stdout.strip().splitlines()[-1])
    assert gaps.pop("replicas") == 2
    assert max(gaps.values()) < 1e-5, gaps


def test_converts_to_tflite_builtins_folded_into_conv(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    x = BatchNormalization()(x)
    outputs = keras.layers.Activation("relu")(x)
    model = keras.Model(inputs, outputs)
    copy_weights(model.layers[2])  # non-trivial gamma, beta and moving statistics
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    # Without the default XNNPACK delegate, so the op list shows the converted graph itself.
    interpreter = litert.Interpreter(
        model_content=converter.convert(),
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    ops = [op["op_name"] for op in interpreter._get_ops_details()]
    # The multiply and add fold into the convolution's weights and bias; the ReLU fuses into it too.
    assert ops == ["CONV_2D"], ops

    images = np.random.default_rng(0).normal(size=(1, 8, 8, 3)).astype("float32")
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, model(images, training=False).numpy(), rtol=1e-4, atol=1e-4)
