"""Export to SavedModel and TFLite: parity with Keras, quantisation checks, refusal, labels that travel."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers_export import (
    NAMES,
    cli,
    cumprod_layer,
    synthetic_crops,
    tiny_model,
    train_tiny,
    write_run,
    write_store,
)
from yolol_tf.errors import UserError


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder with a briefly trained tiny model and its store (shared: training costs seconds)."""
    root = tmp_path_factory.mktemp("export")
    store = write_store(root / "store")
    return write_run(root / "run", train_tiny(tiny_model(), steps=40), store)


def _keras_probs(run, x):
    import keras
    import tensorflow as tf

    model = keras.saving.load_model(run / "best.keras", compile=False)
    return tf.sigmoid(model(x.astype(np.float32), training=False)).numpy()


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if ".tmp" in p.name]


def test_savedmodel_serves_probabilities_like_keras(run, tmp_path):
    import tensorflow as tf

    from yolol_tf.inference.export import export

    result = export(run, "savedmodel", out=tmp_path / "serving", verbose=False)
    loaded = tf.saved_model.load(str(result.path))
    serve = loaded.signatures["serve"]
    assert list(serve.structured_input_signature[1]) == ["pixels"]
    x, _ = synthetic_crops(16, seed=7)
    probs = serve(pixels=tf.constant(x, tf.float32))["probabilities"].numpy()
    np.testing.assert_allclose(probs, _keras_probs(run, x), atol=1e-4)
    assert json.loads((result.path / "labels.json").read_text())["names"] == NAMES
    assert (result.path / "labels.txt").read_text().split() == NAMES
    assert result.max_abs_diff <= 1e-4 and result.checked == 48
    assert _leftovers(tmp_path) == []


def test_tflite_float32_matches_keras_with_builtin_ops_and_embedded_labels(run):
    from ai_edge_litert.interpreter import Interpreter

    from yolol_tf.inference.export import export
    from yolol_tf.inference.runners import read_tflite_labels

    result = export(run, "tflite", verbose=False)
    assert result.path == run / "best.tflite"
    interpreter = Interpreter(model_path=str(result.path))
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    x, _ = synthetic_crops(4, seed=8)
    interpreter.resize_tensor_input(inp["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x.astype(np.float32))
    interpreter.invoke()
    np.testing.assert_allclose(interpreter.get_tensor(out["index"]), _keras_probs(run, x), atol=1e-4)
    labels = read_tflite_labels(result.path)
    assert labels.names == NAMES and labels.thresholds == [0.5] * 3 and labels.input_shape == (32, 32, 3)
    assert (run / "best.labels.txt").read_text().split() == NAMES
    assert result.size_bytes > 0 and result.latency_ms > 0 and result.keras_latency_ms > 0


def test_single_label_exports_softmax_probabilities(run, tmp_path):
    from yolol_tf.inference.export import export
    from yolol_tf.inference.runners import TFLiteRunner, read_tflite_labels

    softmax_run = write_run(tmp_path / "softmax", tiny_model(), run.parent / "store", activation="softmax")
    result = export(softmax_run, "tflite", verbose=False)
    probs = TFLiteRunner(result.path)(synthetic_crops(4, seed=3)[0])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert read_tflite_labels(result.path).activation == "softmax"


def test_float16_reports_map_beside_keras(run, tmp_path, capsys):
    from yolol_tf.inference.export import export

    result = export(run, "tflite", quantize="float16", out=tmp_path / "m.fp16.tflite")
    assert result.keras_map is not None and result.keras_map - result.export_map <= 0.02
    printed = capsys.readouterr().out
    assert "tflite float16" in printed and f"{result.export_map:.4f}" in printed and "latency" in printed
    assert (tmp_path / "m.fp16.labels.json").is_file()


def test_refused_export_is_kept_aside_and_exits_non_zero(run, tmp_path, capsys):
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


def test_op_without_builtin_kernel_is_named(tmp_path):
    from yolol_tf.inference.export import export

    model = tiny_model(extra_layer=cumprod_layer())
    model.save(tmp_path / "flex.keras")
    with pytest.raises(UserError, match="tf.Cumprod") as info:
        export(tmp_path / "flex.keras", "tflite", verbose=False)
    assert info.value.exit_code == 1 and "Flex" in info.value.message
    assert not (tmp_path / "flex.tflite").exists()


def test_bad_options_are_user_errors(run, tmp_path):
    from yolol_tf.inference.export import export

    with pytest.raises(UserError, match="format='onnx'"):
        export(run, "onnx")
    with pytest.raises(UserError, match="tflite only"):
        export(run, "savedmodel", quantize="int8")
    tiny_model().save(tmp_path / "bare.keras")
    with pytest.raises(UserError, match="--data"):
        export(tmp_path / "bare.keras", "tflite", quantize="int8", verbose=False)


def test_unusable_destination_is_refused_before_the_export_runs(run, tmp_path, monkeypatch):
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
def test_int8_of_a_trained_model_passes_its_check(run, tmp_path):
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
    x, _ = synthetic_crops(8, seed=9)
    probs = TFLiteRunner(result.path)(x)
    np.testing.assert_array_equal(probs.argmax(1), _keras_probs(run, x).argmax(1))
