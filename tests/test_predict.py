"""Predict with every model kind (Keras, SavedModel, TFLite, ONNX): same top classes, boxes, output formats,
unreadable images skipped."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.data import RGB as NAMES
from yolol_tf.errors import UserError


@pytest.fixture(scope="module")
def run(tmp_path_factory, make_store, make_tiny_model, train_briefly, make_run):
    """A run folder with a tiny model trained briefly on "centre" crops (class k brightens channel k)."""
    root = tmp_path_factory.mktemp("predict")
    store = make_store(root / "store", names=NAMES, counts={"train": 96, "val": 48})
    model = train_briefly(make_tiny_model(), steps=40)
    return make_run(root / "run", model, store, thresholds=[0.5, 0.4, 0.6])


def _write_images(folder: Path, x: np.ndarray) -> None:
    """Writes crops as non-square images of several formats: each upscaled to 48x40 (so letterboxing pads)
    in png, jpg, bmp or an upper-case .PNG, some in a sub-folder."""
    import cv2

    for i, crop in enumerate(x):
        ext = [".png", ".PNG", ".bmp", ".png"][i % 4]
        path = folder / ("sub" if i % 2 else "") / f"img{i}{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        image = cv2.resize(crop, (40, 48), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def images(tmp_path_factory, make_crops):
    folder = tmp_path_factory.mktemp("images")
    _write_images(folder, make_crops(8, seed=3)[0])
    (folder / "sub" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (folder / "notes.txt").write_text("not an image")
    return folder


def _tops(preds):
    return {(p.image.name, p.box): max(p.probabilities, key=p.probabilities.get) for p in preds}


def _check_same_as_keras(run, model, images, capsys):
    from yolol_tf.inference.predict import predict

    reference = predict(run / "best.keras", [images], progress=False)
    preds = predict(model, [images], batch_size=3, progress=False)
    assert len(preds) == 8  # the broken image is skipped, notes.txt is not an image
    assert "broken.jpg" in capsys.readouterr().err
    assert _tops(preds) == _tops(reference)
    ref_probs = np.array([list(p.probabilities.values()) for p in reference])
    probs = np.array([list(p.probabilities.values()) for p in preds])
    return np.abs(probs - ref_probs).max()


def test_run_folder_and_keras_file_agree_and_skip_unreadable(run, images, capsys):
    from yolol_tf.inference.predict import predict

    preds = predict(run, [images], progress=False)
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "skipped" in err
    names = ["img0.png", "img1.PNG", "img2.bmp", "img3.png", "img4.png", "img5.PNG", "img6.bmp", "img7.png"]
    assert sorted(p.image.name for p in preds) == sorted(names)
    for p in preds:
        # Only classes at or above their own threshold are listed, most probable first.
        assert all(s >= [0.5, 0.4, 0.6][NAMES.index(n)] for n, s in p.labels)
        assert [s for _, s in p.labels] == sorted((s for _, s in p.labels), reverse=True)
    assert _check_same_as_keras(run, run / "best.keras", images, capsys) == 0


def test_savedmodel_and_tflite_give_the_same_top_classes(run, images, capsys):
    from yolol_tf.inference.export import export

    savedmodel = export(run, "savedmodel", verbose=False).path
    tflite = export(run, "tflite", verbose=False).path
    assert _check_same_as_keras(run, savedmodel, images, capsys) < 1e-4
    assert _check_same_as_keras(run, tflite, images, capsys) < 1e-4


@pytest.mark.large
def test_int8_tflite_gives_the_same_top_classes(run, images, capsys):
    from yolol_tf.inference.export import export
    from yolol_tf.inference.runners import load_runner

    result = export(run, "tflite", quantize="int8", num_calibration=64, verbose=False)
    runner = load_runner(result.path)
    # Its own thresholds (tuned on its outputs), not the run's [0.5, 0.4, 0.6].
    assert runner.quantized and runner.labels.thresholds == list(result.thresholds)
    assert _check_same_as_keras(run, result.path, images, capsys) < 0.05


def test_onnx_gives_the_same_top_classes(run, images, capsys, cli):
    for name in ("tf2onnx", "onnx", "onnxruntime"):
        pytest.importorskip(name)
    from yolol_tf.inference.export import export
    from yolol_tf.inference.runners import OnnxRunner, load_runner

    onnx_file = export(run, "onnx", verbose=False).path
    runner = load_runner(onnx_file)
    assert isinstance(runner, OnnxRunner) and runner.labels.thresholds == [0.5, 0.4, 0.6]
    assert _check_same_as_keras(run, onnx_file, images, capsys) < 1e-4
    # Without the labels files beside it, the labels embedded in the file are used.
    alone = onnx_file.parent / "alone" / "model.onnx"
    alone.parent.mkdir()
    alone.write_bytes(onnx_file.read_bytes())
    assert load_runner(alone).labels.names == NAMES and load_runner(alone).labels.thresholds == [
        0.5,
        0.4,
        0.6,
    ]
    out = onnx_file.parent / "preds.json"
    assert cli("predict", str(alone), str(images), "--format", "json", "--out", str(out)) == 0
    assert len(json.loads(out.read_text())) == 8


def test_onnx_without_onnxruntime_names_the_extra(run, images, tmp_path, monkeypatch, capsys, cli):
    (tmp_path / "model.onnx").write_bytes(b"whatever")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    assert cli("predict", str(tmp_path / "model.onnx"), str(images / "img0.png")) == 2
    err = capsys.readouterr().err
    assert "needs onnxruntime" in err and 'pip install "yolol-tf[onnx]"' in err and "Traceback" not in err


def test_boxes_are_classified_one_by_one(run, tmp_path, make_crops):
    import cv2

    from yolol_tf.inference.predict import predict

    # A 64x128 image: a "red" object on the left, a "blue" one on the right.
    image = np.full((64, 128, 3), 30, np.uint8)
    red = make_crops(1, labels=np.eye(3, dtype=np.float32)[[0]], seed=1)[0][0]  # shows "red" alone
    blue = make_crops(1, labels=np.eye(3, dtype=np.float32)[[2]], seed=2)[0][0]
    image[16:48, 8:40] = red
    image[8:56, 72:120] = cv2.resize(blue, (48, 48))
    cv2.imwrite(str(tmp_path / "scene.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "scene.txt").write_text("5 0.1875 0.5 0.25 0.5\n\n7 0.75 0.5 0.375 0.75\n")
    preds = predict(run, [tmp_path / "scene.png"], boxes=labels, progress=False)
    assert [(p.box, p.xyxy) for p in preds] == [(0, (8, 16, 40, 48)), (2, (72, 8, 120, 56))]
    assert [p.labels[0][0] for p in preds] == ["red", "blue"]


def test_formats(run, images):
    from yolol_tf.inference.predict import format_predictions, predict

    preds = predict(run, [images / "img0.png"], progress=False)
    rows = json.loads(format_predictions(preds, "json"))
    assert rows[0]["image"].endswith("img0.png") and set(rows[0]["probabilities"]) == set(NAMES)
    assert [d["name"] for d in rows[0]["labels"]] == [n for n, _ in preds[0].labels]
    table = list(csv.DictReader(io.StringIO(format_predictions(preds, "csv"))))
    assert float(table[0]["red"]) == pytest.approx(preds[0].probabilities["red"], abs=1e-6)
    assert "img0.png" in format_predictions(preds, "table")
    with pytest.raises(UserError, match="xml"):
        format_predictions(preds, "xml")


def test_cli_writes_csv_and_names_missing_paths(run, images, tmp_path, capsys, cli):
    out = tmp_path / "preds.csv"
    assert cli("predict", str(run), str(images), "--format", "csv", "--out", str(out)) == 0
    assert len(list(csv.DictReader(out.open()))) == 8
    assert cli("predict", str(run), str(tmp_path / "missing")) == 2
    assert "missing" in capsys.readouterr().err


def test_corrupt_models_are_named_without_a_traceback(run, images, tmp_path, capsys, cli):
    (tmp_path / "junk.tflite").write_bytes(b"\x00\x01not a flatbuffer at all" * 8)
    (tmp_path / "empty.tflite").write_bytes(b"")
    broken = tmp_path / "broken.savedmodel"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"garbage")
    cases = [("junk.tflite", "TFLite"), ("empty.tflite", "TFLite"), ("broken.savedmodel", "SavedModel")]
    try:
        import onnxruntime  # noqa: F401

        (tmp_path / "junk.onnx").write_bytes(b"\x00\x01not a protobuf at all" * 8)
        cases.append(("junk.onnx", "ONNX"))
    except ImportError:
        pass
    for model, kind in cases:
        assert cli("predict", str(tmp_path / model), str(images / "img0.png")) == 2
        err = capsys.readouterr().err
        assert f"{model}: cannot load the {kind}" in err and "Traceback" not in err


def test_paths_without_images_are_an_error(run, tmp_path, capsys, cli):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("no images here")
    assert cli("predict", str(run), str(tmp_path / "docs")) == 2
    err = capsys.readouterr().err
    assert "No images in" in err and "docs" in err and ".png" in err


def test_boxes_too_small_for_training_are_not_classified(run, tmp_path):
    import cv2

    from yolol_tf.inference.predict import predict

    cv2.imwrite(str(tmp_path / "scene.png"), np.full((64, 64, 3), 90, np.uint8))
    labels = tmp_path / "labels"
    labels.mkdir()
    # 1.5 px wide: below prepare's default min_box (2 px), so training never saw such a crop.
    (labels / "scene.txt").write_text("0 0.5 0.5 0.0234375 0.5\n1 0.5 0.5 0.25 0.25\n")
    preds = predict(run, [tmp_path / "scene.png"], boxes=labels, progress=False)
    assert [p.box for p in preds] == [1]
