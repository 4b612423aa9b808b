"""EfficientNet-Lite0 after ``train``: reloads safely with its pixel scaling inside, exports (int8 TFLite
through the accuracy gate, ONNX), predicts and evaluates from the exports, and tunes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from yolol_tf.models.weights import imagenet_lite0

HAS_CHECKPOINT = importlib.util.find_spec(imagenet_lite0.PACKAGE) is not None
NEEDS_CHECKPOINT = pytest.mark.skipif(
    not HAS_CHECKPOINT, reason=f"the pretrained extra is not installed: {imagenet_lite0.INSTALL}"
)
# The accuracy gate: the mAP an int8 export may lose against the Keras model (export's default max_drop).
MAX_DROP = 0.02


def _has_onnx() -> bool:
    return all(importlib.util.find_spec(name) for name in ("tf2onnx", "onnx", "onnxruntime"))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, make_store) -> Path:
    """96 train, 48 val and 16 test "centre" crops of 32 px, 3 classes."""
    return make_store(tmp_path_factory.mktemp("store"), counts={"train": 96, "val": 48, "test": 16})


@pytest.fixture(scope="module")
def imagenet_run(tmp_path_factory: pytest.TempPathFactory, store: Path, make_run, train_briefly) -> Path:
    """A run folder of lite0 from its ImageNet weights, its head fitted for a few steps, its best.keras
    saved as training saves it (:func:`yolol_tf.training.callbacks.save_model_atomic`)."""
    if not HAS_CHECKPOINT:
        pytest.skip(f"the pretrained extra is not installed: {imagenet_lite0.INSTALL}")
    from yolol_tf.models import build_model
    from yolol_tf.training.callbacks import save_model_atomic

    model = build_model("lite0", (32, 32, 3), 3, weights="imagenet", dropout=0.0, freeze_backbone=True)
    model = train_briefly(model, steps=16)
    run = make_run(tmp_path_factory.mktemp("lite0") / "run", model, store)
    save_model_atomic(model, run / "best.keras")
    return run


@NEEDS_CHECKPOINT
def test_pretrained_run_reloads_in_safe_mode_with_its_pixel_scaling(imagenet_run: Path, random_batch) -> None:
    import keras

    from yolol_tf.models import lite0

    # safe_mode refuses lambdas: the preprocessing is a plain Rescaling layer, stored with the model.
    model = keras.saving.load_model(imagenet_run / "best.keras", compile=False, safe_mode=True)
    rescale = model.get_layer("rescale").get_config()
    assert rescale["scale"] == pytest.approx(1 / lite0.PIXEL_STD)
    assert rescale["offset"] == pytest.approx(-lite0.PIXEL_MEAN / lite0.PIXEL_STD)
    images, _ = random_batch((32, 32, 3), 3, batch=2)
    scaled = keras.Model(model.inputs[0], model.get_layer("rescale").output)(images)
    np.testing.assert_allclose(scaled, (images - 127.0) / 128.0, rtol=1e-6, atol=1e-6)


@NEEDS_CHECKPOINT
def test_pretrained_int8_passes_the_gate_calibrated_on_raw_pixels(imagenet_run: Path) -> None:
    from yolol_tf.inference.export import export

    result = export(imagenet_run, "tflite", quantize="int8", latency_runs=3, verbose=False)
    assert result.path.name == "best.int8.tflite" and not result.forced
    assert result.keras_map > 0.6, "ImageNet features separate the crops' classes after a few steps"
    assert result.keras_map - result.export_map <= MAX_DROP, result.summary()
    # Calibrated on raw pixels 0..255, the input takes a uint8 pixel p exactly as p - 128: scale 1. Crops
    # normalised before calibration would have given a scale near 1/128.
    (input_scale, input_zero), _ = result.io_quantization
    assert (input_scale, input_zero) == (pytest.approx(1.0), -128)


@NEEDS_CHECKPOINT
@pytest.mark.skipif(not _has_onnx(), reason="the onnx extra is not installed")
def test_pretrained_onnx_from_the_cli_agrees_with_keras(imagenet_run: Path, cli) -> None:
    from yolol_tf.inference.runners import load_runner

    # A run's best.keras returns its logits in a one-element list; the ONNX graph must not stack it.
    assert cli("export", str(imagenet_run), "--format", "onnx") == 0
    runner = load_runner(imagenet_run / "best.onnx")
    keras_runner = load_runner(imagenet_run)
    x = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)
    probs = runner(x)
    assert probs.shape == (5, 3)
    np.testing.assert_allclose(probs, keras_runner(x), atol=1e-4)


@NEEDS_CHECKPOINT
def test_pretrained_exports_predict_and_evaluate_like_keras(
    imagenet_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, cli, make_crops
) -> None:
    import cv2

    from yolol_tf.inference.evaluate import evaluate

    exports = [imagenet_run / "best.int8.tflite"]  # from the int8 test above
    if _has_onnx():
        exports.append(imagenet_run / "best.onnx")
    exports = [path for path in exports if path.is_file()]
    if not exports:
        pytest.skip("run with the export tests above")
    reference = evaluate(imagenet_run, split="val")
    crops, _ = make_crops(4, seed=5)
    for i, crop in enumerate(crops):
        cv2.imwrite(str(tmp_path / f"crop{i}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    for path in exports:
        capsys.readouterr()
        assert cli("evaluate", str(path), "--split", "val", "--format", "json") == 0
        result = json.loads(capsys.readouterr().out)
        assert result["samples"] == 48
        assert reference["tuned"]["map"] - result["tuned"]["map"] <= MAX_DROP + 1e-6, path.name
        out = tmp_path / f"{path.name}.json"
        assert cli("predict", str(path), str(tmp_path), "--format", "json", "--out", str(out)) == 0
        assert len(json.loads(out.read_text())) == 4


def test_scratch_lite0_tunes_one_trial(store: Path, tmp_path: Path, cli) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("dropout: 0.0\nsmall_input: false\nloss: bce\nbatch_size: 16\n")
    out = tmp_path / "search"
    args = ["tune", "lite0", "--data", str(store), "--max-trials", "1", "--epochs", "1",
            "--steps-per-epoch", "2", "--space", str(space), "--out", str(out)]  # fmt: skip
    assert cli(*args) == 0
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["status"]) == ["COMPLETED"] and trials["score"].notna().all()
    assert "model: lite0" in (out / "best.yaml").read_text()


@NEEDS_CHECKPOINT
@pytest.mark.large
def test_a_two_phase_run_exports_to_int8_and_onnx(store: Path, tmp_path: Path, tiny_train_config) -> None:
    from yolol_tf.inference.export import export
    from yolol_tf.training import train

    config = tiny_train_config(
        store, tmp_path / "run", model="lite0", model_options={"weights": "imagenet", "dropout": 0.0},
        epochs=2, head_epochs=1, steps_per_epoch=6, learning_rate=3e-3,
    )  # fmt: skip
    run = train(config, verbose=0)
    result = export(run, "tflite", quantize="int8", latency_runs=3, verbose=False)
    assert not result.forced and result.keras_map - result.export_map <= MAX_DROP, result.summary()
    if _has_onnx():
        assert export(run, "onnx", latency_runs=3, verbose=False).max_abs_diff <= 1e-4
