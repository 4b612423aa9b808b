"""Export to SavedModel, TFLite and ONNX: parity with Keras, quantisation checks, int8 recovery, refusal,
labels and per-export thresholds that travel."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from tests.support.data import RGB as NAMES
from yolol_tf.errors import UserError

# Everything is small enough to build and train in a second or two on a CPU: 32x32 "centre" crops of three
# classes that a linear probe separates (class k brightens colour channel k), a handful of filters.


@pytest.fixture(scope="module")
def run(tmp_path_factory, make_store, make_tiny_model, train_briefly, make_run):
    """A run folder with a briefly trained tiny model and its store (shared: training costs seconds)."""
    root = tmp_path_factory.mktemp("export")
    store = make_store(root / "store", names=NAMES, counts={"train": 96, "val": 48})
    return make_run(root / "run", train_briefly(make_tiny_model(), steps=40), store)


def _val_crops(run) -> tuple[np.ndarray, np.ndarray]:
    """The crops (and labels) of the run's store's val split, in the order export checks on them."""
    from yolol_tf.data import open_data
    from yolol_tf.runs import read_run_config

    source = open_data(str(read_run_config(run)["data"]), size=32)
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in source.dataset("val", 64)), strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def _int8_fragile_model(trained, x: np.ndarray, *, span: float = 1e4):
    """``trained`` (a "conv" tiny model) with a layer int8 quantisation breaks on purpose.

    A Dense layer ``wide`` goes between the pooled features and the logits: it passes the features
    through unchanged and adds one channel spanning about ±``span`` that the logits ignore (weight 0).
    In float the outputs are exactly the trained model's; in int8 the wide tensor is quantised with one
    scale for all its channels (about span / 127 per step), which rounds every real feature to nothing.
    Keeping ``wide`` and ``logits`` in float (so the wide tensor never goes through int8) recovers it.

    Args:
        trained: a trained tiny model.
        x: crops the span is measured on.
        span: the extra channel's half-range on ``x``.
    """
    import keras

    features = trained.get_layer("logits").input
    n = int(features.shape[-1])
    wide = keras.layers.Dense(n + 1, name="wide")
    logits = keras.layers.Dense(int(trained.outputs[0].shape[-1]), name="logits")
    model = keras.Model(trained.inputs[0], logits(wide(features)), name="tiny_fragile")
    signs = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    extra = keras.Model(trained.inputs[0], features)(x.astype(np.float32)).numpy() @ signs
    column = signs * span / np.abs(extra).max()
    wide.set_weights(
        [np.concatenate([np.eye(n), column[:, None]], axis=1).astype(np.float32), np.zeros(n + 1, np.float32)]
    )
    kernel, bias = trained.get_layer("logits").get_weights()
    logits.set_weights([np.concatenate([kernel, np.zeros((1, kernel.shape[1]))]).astype(np.float32), bias])
    return model


def _cumprod_layer():
    """A layer whose op (tf.Cumprod) has no TFLite builtin kernel: conversion would need Flex."""
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="tests_export")
    class Cumprod(keras.layers.Layer):
        """Cumulative product over channels (a stand-in for any op that needs Flex)."""

        def call(self, x):
            return tf.math.cumprod(x, axis=-1)

    return Cumprod()


def _keras_probs(run, x):
    import keras
    import tensorflow as tf

    model = keras.saving.load_model(run / "best.keras", compile=False)
    return tf.sigmoid(model(x.astype(np.float32), training=False)).numpy()


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if ".tmp" in p.name]


def test_savedmodel_serves_probabilities_like_keras(run, tmp_path, make_crops):
    import tensorflow as tf

    from yolol_tf.inference.export import export

    result = export(run, "savedmodel", out=tmp_path / "serving", verbose=False)
    loaded = tf.saved_model.load(str(result.path))
    serve = loaded.signatures["serve"]
    assert list(serve.structured_input_signature[1]) == ["pixels"]
    x, _ = make_crops(16, seed=7)
    probs = serve(pixels=tf.constant(x, tf.float32))["probabilities"].numpy()
    np.testing.assert_allclose(probs, _keras_probs(run, x), atol=1e-4)
    assert json.loads((result.path / "labels.json").read_text())["names"] == NAMES
    assert (result.path / "labels.txt").read_text().split() == NAMES
    assert result.max_abs_diff <= 1e-4 and result.checked == 48
    assert _leftovers(tmp_path) == []


def test_tflite_float32_matches_keras_with_builtin_ops_and_embedded_labels(run, make_crops):
    from ai_edge_litert.interpreter import Interpreter

    from yolol_tf.inference.export import export
    from yolol_tf.inference.runners import read_tflite_labels

    result = export(run, "tflite", verbose=False)
    assert result.path == run / "best.tflite"
    interpreter = Interpreter(model_path=str(result.path))
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    x, _ = make_crops(4, seed=8)
    interpreter.resize_tensor_input(inp["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x.astype(np.float32))
    interpreter.invoke()
    np.testing.assert_allclose(interpreter.get_tensor(out["index"]), _keras_probs(run, x), atol=1e-4)
    labels = read_tflite_labels(result.path)
    assert labels.names == NAMES and labels.thresholds == [0.5] * 3 and labels.input_shape == (32, 32, 3)
    assert (run / "best.labels.txt").read_text().split() == NAMES
    assert result.size_bytes > 0 and result.latency_ms > 0 and result.keras_latency_ms > 0


def test_single_label_exports_softmax_probabilities(run, tmp_path, make_crops, make_tiny_model, make_run):
    from yolol_tf.inference.export import export
    from yolol_tf.inference.runners import TFLiteRunner, read_tflite_labels

    softmax_run = make_run(
        tmp_path / "softmax", make_tiny_model(), run.parent / "store", activation="softmax"
    )
    result = export(softmax_run, "tflite", verbose=False)
    probs = TFLiteRunner(result.path)(make_crops(4, seed=3)[0])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert read_tflite_labels(result.path).activation == "softmax"


def test_float16_reports_map_beside_keras(run, tmp_path, capsys):
    from yolol_tf.inference.export import export

    result = export(run, "tflite", quantize="float16", out=tmp_path / "m.fp16.tflite")
    assert result.keras_map is not None and result.keras_map - result.export_map <= 0.02
    printed = capsys.readouterr().out
    assert "tflite float16" in printed and f"{result.export_map:.4f}" in printed and "latency" in printed
    assert (tmp_path / "m.fp16.labels.json").is_file()


def test_refused_export_is_kept_aside_and_exits_non_zero(run, tmp_path, capsys, cli):
    dest = tmp_path / "model.float16.tflite"
    code = cli(
        "export",
        str(run),
        "--format",
        "tflite",
        "--quantize",
        "float16",
        "--out",
        str(dest),
        "--max-drop",
        "-1",
    )
    assert code == 1
    assert "refused" in capsys.readouterr().err.lower()
    assert not dest.exists()
    (refused,) = [p for p in tmp_path.iterdir() if p.suffix == ".tflite"]
    assert refused.name.startswith("model.float16.REFUSED-map-drop-")
    # Its labels lie beside it, named as for a placed export, so it can be inspected or used as is.
    assert refused.with_suffix(".labels.txt").read_text().split() == NAMES
    assert json.loads(refused.with_suffix(".labels.json").read_text())["names"] == NAMES
    assert len(list(tmp_path.iterdir())) == 3
    # --force keeps it under the final name.
    assert (
        cli(
            "export",
            str(run),
            "-f",
            "tflite",
            "-q",
            "float16",
            "-o",
            str(dest),
            "--max-drop",
            "-1",
            "--force",
        )
        == 0
    )
    assert dest.is_file() and "FORCED" in capsys.readouterr().out


def test_interrupted_export_leaves_nothing_under_the_final_name(run, tmp_path, monkeypatch):
    from yolol_tf.inference.export import export, tflite

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tflite, "embed_labels", interrupt)
    with pytest.raises(KeyboardInterrupt):
        export(run, "tflite", out=tmp_path / "m.tflite", verbose=False)
    assert list(tmp_path.iterdir()) == []


def test_cnn_with_our_batch_norm_converts_to_builtin_ops(tmp_path):
    from yolol_tf.inference.export import export
    from yolol_tf.inference.runners import load_runner
    from yolol_tf.models import build_model

    model = build_model("cnn", (32, 32, 3), 3, width=4, depths=(1, 1), dropout=0.0)
    model.save(tmp_path / "cnn.keras")
    result = export(tmp_path / "cnn.keras", "tflite", verbose=False)
    assert result.max_abs_diff <= 1e-4 and result.checked == 16  # random pixels: no data given
    assert load_runner(result.path).labels.names == ["class_0", "class_1", "class_2"]


def test_op_without_builtin_kernel_is_named(tmp_path, make_tiny_model):
    from yolol_tf.inference.export import export

    model = make_tiny_model(extra_layer=_cumprod_layer())
    model.save(tmp_path / "flex.keras")
    with pytest.raises(UserError, match="tf.Cumprod") as info:
        export(tmp_path / "flex.keras", "tflite", verbose=False)
    assert info.value.exit_code == 1 and "Flex" in info.value.message
    assert not (tmp_path / "flex.tflite").exists()


def test_bad_options_are_user_errors(run, tmp_path, make_tiny_model):
    from yolol_tf.inference.export import export

    with pytest.raises(UserError, match="format='coreml'"):
        export(run, "coreml")
    with pytest.raises(UserError, match="tflite only"):
        export(run, "onnx", quantize="int8")
    with pytest.raises(UserError, match="tflite only"):
        export(run, "savedmodel", quantize="int8")
    make_tiny_model().save(tmp_path / "bare.keras")
    with pytest.raises(UserError, match="--data"):
        export(tmp_path / "bare.keras", "tflite", quantize="int8", verbose=False)


def test_unusable_destination_is_refused_before_the_export_runs(run, tmp_path, monkeypatch, cli):
    from yolol_tf.inference.export import export, pipeline

    def must_not_run(*args, **kwargs):
        raise AssertionError("the export ran before its destination was checked")

    monkeypatch.setattr(pipeline, "export_crops", must_not_run)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(UserError, match="notes.txt is a file"):
        export(run, "savedmodel", out=a_file, verbose=False)
    with pytest.raises(UserError, match="cannot create the folder"):
        export(run, "tflite", out=a_file / "sub" / "m.tflite", verbose=False)
    # A folder of the user's that is not a SavedModel would be replaced: refused, left as it was.
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"jpeg")
    with pytest.raises(UserError, match="other than a SavedModel"):
        export(run, "savedmodel", out=tmp_path / "photos", verbose=False)
    assert a_file.read_text() == "mine" and (tmp_path / "photos" / "a.jpg").is_file()
    assert cli("export", str(run), "--out", str(a_file)) == 2


@pytest.mark.large
def test_int8_of_a_trained_model_passes_its_check(run, tmp_path, make_crops):
    from ai_edge_litert.interpreter import Interpreter

    from yolol_tf.inference.export import export
    from yolol_tf.inference.runners import TFLiteRunner, read_tflite_labels

    result = export(
        run, "tflite", quantize="int8", out=tmp_path / "m.int8.tflite", num_calibration=64, verbose=False
    )
    assert result.keras_map > 0.9 and result.keras_map - result.export_map <= 0.02
    details = Interpreter(model_path=str(result.path)).get_input_details()[0]
    assert details["dtype"] == np.int8
    scale, zero = details["quantization"]
    assert scale == pytest.approx(1.0) and zero == -128  # a uint8 pixel p is fed as p - 128
    assert result.io_quantization[0] == (scale, zero) and "int8 input" in result.summary()
    assert read_tflite_labels(result.path).names == NAMES
    x, _ = make_crops(8, seed=9)
    probs, keras_probs = TFLiteRunner(result.path)(x), _keras_probs(run, x)
    assert np.abs(probs - keras_probs).max() < 0.05
    # The top class agrees wherever Keras' is clear (two close classes may swap under int8 rounding).
    top2 = np.sort(keras_probs, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.1
    np.testing.assert_array_equal(probs.argmax(1)[clear], keras_probs.argmax(1)[clear])
    assert result.recovery is None and result.float_layers == ()  # passed fully quantised


@pytest.mark.large
def test_int8_thresholds_are_tuned_on_the_exports_own_outputs(run, tmp_path):
    from yolol_tf.inference.export import export
    from yolol_tf.inference.runners import TFLiteRunner, load_runner, read_tflite_labels
    from yolol_tf.metrics import tune_thresholds

    result = export(
        run, "tflite", quantize="int8", out=tmp_path / "m.int8.tflite", num_calibration=64, verbose=False
    )
    x, y = _val_crops(run)
    expected = tune_thresholds(y, TFLiteRunner(result.path)(x))
    assert result.thresholds_retuned and result.thresholds == pytest.approx(expected)
    # The run's thresholds (0.5) sat on int8 steps; the export's own sit between two of its scores.
    assert read_tflite_labels(result.path).thresholds == pytest.approx(expected)  # embedded
    beside = json.loads((tmp_path / "m.int8.labels.json").read_text())["thresholds"]
    assert beside == pytest.approx(expected) and load_runner(result.path).labels.thresholds == beside
    assert json.loads((run / "labels.json").read_text())["thresholds"] == [0.5] * 3  # the run's stay


@pytest.fixture(scope="module")
def fragile_run(run, tmp_path_factory, make_crops, make_tiny_model, train_briefly, make_run):
    """A run whose model int8 breaks on purpose (a ±1e4 channel feeding the logits), same store."""
    trained = train_briefly(make_tiny_model(), steps=40)
    fragile = _int8_fragile_model(trained, make_crops(64, seed=9)[0])
    return make_run(tmp_path_factory.mktemp("fragile") / "run", fragile, run.parent / "store")


@pytest.mark.large
def test_int8_that_loses_too_much_keeps_the_layers_responsible_in_float(
    fragile_run, tmp_path, capsys, make_crops
):
    from yolol_tf.inference.export import export
    from yolol_tf.inference.runners import TFLiteRunner, read_tflite_labels

    dest = tmp_path / "m.int8.tflite"
    # Fully quantised, the wide channel's step rounds the features away: the plain export is refused.
    with pytest.raises(UserError, match="Export refused: it loses"):
        export(
            fragile_run, "tflite", quantize="int8", out=dest, num_calibration=64, recover=False, verbose=False
        )
    for p in tmp_path.iterdir():
        p.unlink()

    result = export(fragile_run, "tflite", quantize="int8", out=dest, num_calibration=64)
    r = result.recovery
    assert r is not None and result.keras_map - r.full_int8_map > 0.1  # what failed
    assert result.keras_map - result.export_map <= 0.02 and not result.forced  # what ships
    layers = " ".join(result.float_layers)
    assert "wide" in layers and "logits" in layers and "conv2d" not in layers  # the fewest: 2 nodes
    assert len(r.float_nodes) == 2 and r.attempts[-1][3]
    assert result.size_cost_bytes == result.size_bytes - r.full_int8_size_bytes > 0
    assert result.latency_cost_ms is not None
    summary = capsys.readouterr().out
    assert (
        "kept in float: " in summary
        and "wide (FULLY_CONNECTED)" in summary
        and "cost against fully int8" in summary
    )
    # The int8 interface is the fully quantised model's: uint8 pixel p goes in as p - 128.
    runner = TFLiteRunner(dest)
    assert runner.io_details[0]["dtype"] == np.int8 and runner.io_quantization[0] == (1.0, -128)
    assert runner.io_details[1]["dtype"] == np.int8 and runner.io_quantization[1] == (1 / 256, -128)
    assert read_tflite_labels(dest).names == NAMES and dest.with_suffix(".labels.json").is_file()
    x, _ = make_crops(16, seed=9)
    np.testing.assert_array_equal(runner(x).argmax(1), _keras_probs(fragile_run, x).argmax(1))
    assert _leftovers(tmp_path) == []


@pytest.mark.large
def test_int8_that_nothing_recovers_is_still_refused(fragile_run, tmp_path, capsys, cli):
    dest = tmp_path / "m.int8.tflite"
    # A negative --max-drop cannot be met: every selection of float layers fails too.
    code = cli(
        "export", str(fragile_run), "-f", "tflite", "-q", "int8", "-o", str(dest),
        "--max-drop", "-1", "--num-calibration", "64",
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "Export refused" in err and "after keeping up to" in err and "in float" in err
    assert not dest.exists()
    (refused,) = [p for p in tmp_path.iterdir() if p.suffix == ".tflite"]
    assert refused.name.startswith("m.int8.REFUSED-map-drop-")
    assert refused.with_suffix(".labels.json").is_file() and _leftovers(tmp_path) == []


def _onnx_available():
    for name in ("tf2onnx", "onnx", "onnxruntime"):
        pytest.importorskip(name)


def test_onnx_serves_probabilities_like_keras_with_labels_in_its_metadata(run, tmp_path, cli, make_crops):
    _onnx_available()
    import onnx
    import onnxruntime as ort

    from yolol_tf.inference.export import export
    from yolol_tf.inference.runners import read_onnx_labels
    from yolol_tf.runs import Labels

    assert cli("export", str(run), "--format", "onnx", "--out", str(tmp_path / "cli.onnx")) == 0
    assert (tmp_path / "cli.onnx").is_file() and (tmp_path / "cli.labels.json").is_file()
    result = export(run, "onnx", out=tmp_path, verbose=False)
    assert result.path == tmp_path / "best.onnx" and result.max_abs_diff <= 1e-4 and result.checked == 48
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixels"]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    x, _ = make_crops(16, seed=7)
    (probs,) = session.run(None, {"pixels": x.astype(np.float32)})
    np.testing.assert_allclose(probs, _keras_probs(run, x), atol=1e-4)  # sigmoid inside the graph
    # The labels round-trip through metadata_props, and lie beside the file as for TFLite.
    props = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert Labels.from_dict(json.loads(props["yolol_tf_labels"])) == read_onnx_labels(result.path)
    assert read_onnx_labels(result.path).names == NAMES and read_onnx_labels(result.path).input_shape == (
        32,
        32,
        3,
    )
    assert (tmp_path / "best.labels.txt").read_text().split() == NAMES
    assert json.loads(result.labels_path.read_text())["thresholds"] == [0.5] * 3  # float32: the run's
    assert not result.thresholds_retuned and _leftovers(tmp_path) == []


def test_onnx_of_a_mixed_precision_model_is_float32(run, tmp_path, make_crops, make_tiny_model, make_run):
    _onnx_available()
    import keras

    from yolol_tf.inference.export import export
    from yolol_tf.inference.runners import OnnxRunner

    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = make_tiny_model()
    finally:
        keras.config.set_dtype_policy("float32")
    model.set_weights(keras.saving.load_model(run / "best.keras", compile=False).get_weights())
    mixed = make_run(tmp_path / "mixed", model, run.parent / "store", activation="softmax")
    result = export(mixed, "onnx", verbose=False)
    assert result.max_abs_diff <= 1e-4  # against the same weights computed in float32
    probs = OnnxRunner(result.path)(make_crops(4, seed=3)[0])
    assert probs.dtype == np.float32 and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_onnx_without_its_packages_names_the_extra(run, tmp_path, monkeypatch, capsys, cli):
    from yolol_tf.inference.export import export

    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # import tf2onnx now raises ImportError
    with pytest.raises(UserError, match=r'tf2onnx.*pip install "yolol-tf\[onnx\]"') as info:
        export(run, "onnx", out=tmp_path / "m.onnx", verbose=False)
    assert info.value.exit_code == 2
    assert cli("export", str(run), "--format", "onnx", "--out", str(tmp_path / "m.onnx")) == 2
    assert 'pip install "yolol-tf[onnx]"' in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_work_folders_left_by_killed_exports_are_removed(run, tmp_path):
    from yolol_tf.inference.export import export

    stale = tmp_path / ".m.tflite.tmp-k1lled"
    (stale / "savedmodel").mkdir(parents=True)
    (stale / "savedmodel" / "saved_model.pb").write_bytes(b"\0" * 1024)
    export(run, "tflite", out=tmp_path / "m.tflite", verbose=False)
    assert not stale.exists() and _leftovers(tmp_path) == []


def test_a_full_disk_is_one_message_not_a_traceback(run, tmp_path, monkeypatch, capsys, cli):
    import tensorflow as tf

    from yolol_tf.inference.export import tflite

    def disk_full(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "model.tflite; No space left on device")

    monkeypatch.setattr(tflite, "embed_labels", disk_full)
    assert cli("export", str(run), "--format", "tflite", "--out", str(tmp_path / "m.tflite")) == 1
    err = capsys.readouterr().err
    assert "No space left on the device while writing the export" in err and "Traceback" not in err
    assert not (tmp_path / "m.tflite").exists() and _leftovers(tmp_path) == []


def test_a_second_export_to_the_same_destination_is_refused(run, tmp_path):
    from yolol_tf.inference.export import export
    from yolol_tf.locks import exclusive

    with exclusive(tmp_path / "m.tflite", what="export"), pytest.raises(UserError, match="export"):
        export(run, "tflite", out=tmp_path / "m.tflite", verbose=False)
    assert not (tmp_path / "m.tflite").exists()
