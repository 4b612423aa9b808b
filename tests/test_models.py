"""Model builders: shapes, registry errors, save/load, parameter counts, transfer learning, learning."""

from __future__ import annotations

import numpy as np
import pytest

from yolol_tf.errors import UserError

keras = pytest.importorskip("keras")

from yolol_tf.models import MODEL_NAMES, MODELS, SPECS, build_model, get_spec, model_options  # noqa: E402
from yolol_tf.models.finetune import backbone_layers  # noqa: E402
from yolol_tf.models.layers import BatchNormalization  # noqa: E402

# Tiny variants so that every test runs in seconds on two CPU cores.
SMALL = {
    "dense": ((16, 16, 3), {"widths": (32, 16), "dropout": 0.1, "batch_norm": True}),
    "cnn": ((32, 32, 3), {"width": 8, "depths": (1, 1)}),
    "resnet50": ((32, 32, 3), {"small_input": False}),
    "lite0": ((32, 32, 3), {"dropout": 0.1}),
}


def _last_line(done) -> str:
    """The last line a child process printed, once it has succeeded."""
    assert done.returncode == 0, done.stderr[-2000:]
    return (done.stdout.strip().splitlines() or [""])[-1]


def test_registry_lists_every_model():
    assert tuple(MODELS) == tuple(SPECS) == MODEL_NAMES == ("dense", "cnn", "resnet50", "lite0")
    assert model_options("resnet50")["norm"] == "ours"
    for name in MODEL_NAMES:
        spec = get_spec(name)
        # One module per model, named as on the command line, holding its builder and its entry.
        assert spec.name == name and spec.build.__module__ == f"yolol_tf.models.{name}"
        assert MODELS[name] is spec.build and spec.summary
    with pytest.raises(UserError, match="Unknown model 'vgg'. Choose one of: dense, cnn, resnet50, lite0"):
        get_spec("vgg")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_searched_values_become_options_the_builder_takes(name):
    spec = get_spec(name)
    low, high = spec.learning_rates
    assert 0 < low < high and spec.batch_sizes and all(b >= 1 for b in spec.batch_sizes)
    # The smallest and the largest value of every parameter (its first and last choice).
    for end in (0, -1):
        values = {p.name: p.values[end] if p.values else (p.low, p.high)[end] for p in spec.space}
        options = spec.options(values)
        assert options and set(options) <= set(model_options(name)), options
    assert set(spec.options({})) <= set(model_options(name))


def test_registry_cli_help_and_import_load_no_keras(run_python):
    # `yolol-tf --help` and `yolol-tf tune --help` read every spec; none of it may wait for TensorFlow.
    code = (
        "import sys, yolol_tf, yolol_tf.cli; from yolol_tf.cli.tune import _help; "
        "from yolol_tf.models import MODEL_NAMES, get_spec, model_options; "
        "from yolol_tf.tuning.space import model_space, train_values; "
        "text = _help(); [model_options(n) for n in MODEL_NAMES]; "
        "[train_values(n, {p.name: p.values[0] if p.values else p.low for p in model_space(n)}) for n in MODEL_NAMES]; "
        "print(sorted(m for m in ('keras', 'tensorflow', 'keras_tuner') if m in sys.modules), len(text))"
    )
    assert _last_line(run_python("-c", code)).startswith("[] ")


@pytest.mark.parametrize(
    "imports",
    ["import yolol_tf; import keras", "import keras; import yolol_tf", "import yolol_tf; import tensorflow"],
)
def test_plain_keras_loads_our_models_after_import_yolol_tf(imports, tmp_path, random_batch, run_python):
    model = build_model("cnn", (32, 32, 3), 2, width=4, depths=(1,))
    images, _ = random_batch((32, 32, 3), 2)
    path = tmp_path / "cnn.keras"
    model.save(path)
    expected = model(images, training=False).numpy()
    np.save(tmp_path / "images.npy", images)
    # In a fresh process: our layer is registered however Keras arrives, without loading it eagerly.
    code = (
        f"{imports}; import sys, numpy as np; "
        f"m = sys.modules['keras'].models.load_model({str(path)!r}); "
        f"print(type(m.get_layer('stem_bn')).__module__, "
        f"np.abs(m(np.load({str(tmp_path / 'images.npy')!r}), training=False).numpy()).sum())"
    )
    module, total = _last_line(run_python("-c", code)).split()
    assert module == "yolol_tf.models.layers"
    assert float(total) == pytest.approx(float(np.abs(expected).sum()), rel=1e-5)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_builders_take_pixels_and_return_float32_logits(name, random_batch):
    shape, options = SMALL[name]
    model = build_model(name, shape, 5, **options)
    images, _ = random_batch(shape, 5, batch=2)
    logits = model(images, training=False)
    assert tuple(logits.shape) == (2, 5)
    assert model.get_layer("logits").dtype == "float32"
    assert model.get_layer("rescale") is not None
    assert not model.compiled


@pytest.mark.parametrize(
    ("shape", "small_input"), [((32, 32, 3), True), ((48, 40, 3), False), ((28, 28, 1), None)]
)
def test_resnet50_and_cnn_accept_small_and_odd_inputs(shape, small_input):
    if small_input is None:
        model = build_model("cnn", shape, 25, stem_stride=1)
    else:
        model = build_model("resnet50", shape, 3, small_input=small_input)
        if small_input:
            # Without the stem's downsampling, 32 px reaches stage 5 at 4x4 instead of 1x1.
            assert model.get_layer("stage5_block3_out").output.shape[1:3] == (4, 4)
    assert model(np.zeros((1, *shape), "float32")).shape == (1, model.output_shape[-1])


@pytest.mark.parametrize("size", [32, 26])  # 26: a 13-pixel side at the block
def test_cnn_downsampling_shortcut_averages_each_window_before_its_1x1_conv(size):
    """ResNet-D: the shortcut reads every pixel of each 2x2 window (odd sides too); the former strided 1x1
    convolution, kept as ``pool_shortcut=False``, reads one in four. Both have the same weights."""
    pooled = build_model("cnn", (size, size, 3), 3, width=4, depths=(1, 1))
    strided = build_model("cnn", (size, size, 3), 3, width=4, depths=(1, 1), pool_shortcut=False)
    assert pooled.count_params() == strided.count_params()
    assert not [layer for layer in strided.layers if layer.name.endswith("_shortcut_pool")]
    block_in = pooled.get_layer("stem_relu").output
    probe = keras.Model(pooled.input, [block_in, pooled.get_layer("stage1_block1_shortcut_conv").output])
    x, shortcut = (t.numpy() for t in probe(np.random.default_rng(0).uniform(0, 255, (2, size, size, 3))))
    kernel = pooled.get_layer("stage1_block1_shortcut_conv").kernel.numpy()[0, 0]  # [in, out]
    side = x.shape[1]
    half = (side + 1) // 2
    expected = np.zeros((2, half, half, kernel.shape[1]), "float32")
    for i in range(half):
        for j in range(half):
            window = x[
                :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2
            ]  # a window cut by the edge averages what it has
            expected[:, i, j] = window.mean(axis=(1, 2)) @ kernel
    np.testing.assert_allclose(shortcut, expected, rtol=1e-4, atol=1e-4)
    assert strided.get_layer("stage1_block1_shortcut_conv").strides == (2, 2)


def test_unknown_model_or_option_is_a_user_error_listing_valid_ones():
    with pytest.raises(UserError, match="dense, cnn, resnet50, lite0"):
        build_model("vgg", (32, 32, 3), 2)
    with pytest.raises(UserError, match="depth.*Valid options: width=32, depths=") as error:
        build_model("cnn", (32, 32, 3), 2, depth=3)
    assert error.value.exit_code == 2
    with pytest.raises(
        UserError, match="pool_shortcut must be true or false. Received: pool_shortcut='false'"
    ):
        build_model("cnn", (32, 32, 3), 2, pool_shortcut="false")
    with pytest.raises(UserError, match="norm must be one of"):
        build_model("resnet50", (32, 32, 3), 2, norm="group")


def test_resnet50_uses_our_layer_names_and_keras_layer_on_request():
    ours = build_model("resnet50", (32, 32, 3), 2)
    theirs = build_model("resnet50", (32, 32, 3), 2, norm="keras")
    assert isinstance(ours.get_layer("stage2_block1_bn1"), BatchNormalization)
    assert type(theirs.get_layer("stage2_block1_bn1")) is keras.layers.BatchNormalization
    assert [layer.name for layer in ours.layers] == [layer.name for layer in theirs.layers]
    assert ours.get_layer("stage3_block1_shortcut_conv").strides == (2, 2)


def test_resnet50_backbone_has_the_reference_parameter_count():
    model = build_model("resnet50", (32, 32, 3), 7)
    reference = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3))
    backbone = sum(w.numpy().size for layer in backbone_layers(model) for w in layer.weights)
    assert backbone == reference.count_params() == 23_587_712
    assert model.count_params() == backbone + 2048 * 7 + 7


@pytest.mark.parametrize("name", ["cnn", "resnet50", "lite0"])
def test_keras_file_round_trip_with_safe_mode(name, tmp_path, random_batch):
    shape, options = SMALL[name]
    model = build_model(name, shape, 4, **options)
    images, _ = random_batch(shape, 4)
    model(images, training=True)  # moves the BN statistics away from their defaults
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(
        loaded(images, training=False).numpy(), model(images, training=False).numpy()
    )
    assert isinstance(loaded.get_layer("stem_bn"), BatchNormalization)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_a_few_steps_on_random_data_lower_the_loss(name, random_batch, losses_over_steps):
    shape, options = SMALL[name]
    model = build_model(name, shape, 3, **{**options, "dropout": 0.0})
    images, labels = random_batch(shape, 3, batch=8)
    losses = losses_over_steps(model, images, labels, steps=5)
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
def test_resnet50_loads_a_local_backbone_under_another_head_and_freezes_it(
    suffix, tmp_path, random_batch, losses_over_steps
):
    source = build_model("resnet50", (32, 32, 3), 10, norm="keras")
    for layer in source.layers:
        for weight in layer.weights:
            weight.assign(np.random.default_rng(1).uniform(0.5, 1.5, weight.shape).astype("float32"))
    path = tmp_path / f"source{suffix}"
    source.save(path) if suffix == ".keras" else source.save_weights(path)

    model = build_model("resnet50", (32, 32, 3), 3, weights=str(path), freeze_backbone=True, dropout=0.2)
    for name in ("stem_conv", "stage4_block6_bn3", "stage5_block3_conv3"):
        for ours, theirs in zip(model.get_layer(name).weights, source.get_layer(name).weights, strict=True):
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    # Only the head trains; the frozen BN layers keep their statistics through a training step.
    assert [w.path for w in model.trainable_weights] == ["logits/kernel", "logits/bias"]
    before = model.get_layer("stem_bn").moving_mean.numpy().copy()
    losses_over_steps(model, *random_batch((32, 32, 3), 3), steps=1)
    np.testing.assert_array_equal(model.get_layer("stem_bn").moving_mean.numpy(), before)


def test_resnet50_weights_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="not found: .*missing.keras"):
        build_model("resnet50", (32, 32, 3), 2, weights=tmp_path / "missing.keras")
    junk = tmp_path / "junk.weights.h5"
    junk.write_text("not weights")
    with pytest.raises(UserError, match="junk.weights.h5"):
        build_model("resnet50", (32, 32, 3), 2, weights=junk)


def test_mixed_precision_keeps_logits_and_variables_float32(random_batch, losses_over_steps):
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = build_model("cnn", (32, 32, 3), 3, width=8, depths=(1,))
        assert model.get_layer("stage1_block1_conv1").compute_dtype == "float16"
        assert model.get_layer("stem_bn").moving_variance.dtype == "float32"
        images, labels = random_batch((32, 32, 3), 3)
        assert model(images).dtype == "float32"
        losses = losses_over_steps(model, images, labels, steps=3)
        assert np.isfinite(losses).all()
    finally:
        keras.config.set_dtype_policy("float32")


def test_resnet50_with_our_layer_computes_what_it_does_with_keras_layer(random_batch):
    ours = build_model("resnet50", (32, 32, 3), 3, small_input=True)
    theirs = build_model("resnet50", (32, 32, 3), 3, small_input=True, norm="keras")
    theirs.set_weights(ours.get_weights())
    images, _ = random_batch((32, 32, 3), 3)
    for training in (True, False):
        np.testing.assert_allclose(
            ours(images, training=training).numpy(),
            theirs(images, training=training).numpy(),
            rtol=1e-3,
            atol=1e-3,
        )
    np.testing.assert_allclose(
        ours.get_layer("stage5_block3_bn3").moving_variance.numpy(),
        theirs.get_layer("stage5_block3_bn3").moving_variance.numpy(),
        rtol=1e-4,
    )


@pytest.mark.large
def test_resnet50_at_full_size_matches_the_reference_layout():
    model = build_model("resnet50", (224, 224, 3), 1000)
    reference = keras.applications.ResNet50(weights=None, classifier_activation=None)
    assert model.count_params() == reference.count_params()
    assert model.get_layer("stage5_block3_out").output.shape[1:] == (7, 7, 2048)
    assert model(np.zeros((1, 224, 224, 3), "float32")).shape == (1, 1000)
