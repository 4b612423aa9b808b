"""evaluate (of Keras models and of their exports), format_report, read_history and their CLI commands on a
tiny model and a hand-written store."""

from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

import yolol_tf.cli.evaluate  # noqa: F401  registers evaluate and history on the app
import yolol_tf.data
from tests.support.data import RGB as NAMES
from tests.support.data import YOLO_NAMES
from yolol_tf.errors import UserError
from yolol_tf.inference.evaluate import evaluate, format_report, predict_probs

# The store's crops show each class's colour ("channel" crops), which the untrained "colour" model reads with
# some noise, so that its figures are neither perfect nor chance.
THRESHOLDS = [0.4, 0.55, 0.6]


def _model_probs(model, images: np.ndarray, activation: str = "sigmoid") -> np.ndarray:
    """Probabilities computed straight from the model on arrays, for checking evaluate's figures."""
    logits = np.asarray(model.predict(images.astype(np.float32), verbose=0), dtype=np.float64)
    if activation == "softmax":
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return 1 / (1 + np.exp(-logits))


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, make_crops, make_store, make_tiny_model, make_run
) -> dict:
    root = tmp_path_factory.mktemp("evaluate")
    splits = {
        split: make_crops(n, pattern="channel", seed=seed)
        for split, n, seed in (("train", 24, 1), ("val", 20, 2), ("test", 40, 3))
    }
    store = make_store(root / "store", splits, NAMES)
    model = make_tiny_model(body="colour")
    run = make_run(root / "run", model, store, thresholds=THRESHOLDS)
    images, y_true = splits["test"]
    return {
        "root": root,
        "store": store,
        "run": run,
        "model": model,
        "y_true": y_true,
        "y_prob": _model_probs(model, images),
    }


def _sklearn(y_true: np.ndarray, y_prob: np.ndarray, thresholds) -> dict[str, float]:
    t, p = y_true.astype(int), (y_prob >= np.asarray(thresholds)).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "map": skm.average_precision_score(t, y_prob, average="macro"),
            "f1_micro": skm.f1_score(t, p, average="micro", zero_division=0),
            "f1_macro": skm.f1_score(t, p, average="macro", zero_division=0),
            "f1_samples": skm.f1_score(t, p, average="samples", zero_division=0),
            "precision_micro": skm.precision_score(t, p, average="micro", zero_division=0),
            "precision_macro": skm.precision_score(t, p, average="macro", zero_division=0),
            "recall_micro": skm.recall_score(t, p, average="micro", zero_division=0),
            "recall_macro": skm.recall_score(t, p, average="macro", zero_division=0),
            "hamming_loss": skm.hamming_loss(t, p),
            "exact_match": skm.accuracy_score(t, p),
        }


def test_evaluate_run_equals_sklearn_at_tuned_and_default_thresholds(setup: dict) -> None:
    result = evaluate(setup["run"])
    assert result["split"] == "test"
    assert result["samples"] == 40
    assert result["names"] == NAMES
    assert Path(result["model"]).name == "best.keras"
    for key, thresholds in (("tuned", THRESHOLDS), ("default", 0.5)):
        expected = _sklearn(setup["y_true"], setup["y_prob"], thresholds)
        for name, value in expected.items():
            assert result[key][name] == pytest.approx(value, abs=1e-5), f"{key} {name}"
    assert [row["threshold"] for row in result["tuned"]["per_class"]] == pytest.approx(THRESHOLDS)
    assert [row["support"] for row in result["tuned"]["per_class"]] == setup["y_true"].sum(axis=0).tolist()
    assert 0.5 < result["tuned"]["map"] < 1.0, "the tiny model reads the colours, with noise"
    assert "accuracy" not in result["tuned"]


def test_evaluate_model_file_other_split_and_explicit_data(setup: dict) -> None:
    # A model file inside a run folder still finds the run's data through config.yaml.
    assert evaluate(setup["run"] / "best.keras")["data"] == str(setup["store"])
    result = evaluate(setup["run"] / "best.keras", data=setup["store"], split="val", thresholds=[0.5] * 3)
    assert result["split"] == "val" and result["samples"] == 20
    assert result["tuned"]["f1_macro"] == result["default"]["f1_macro"]


def test_yolo_data_is_prepared_at_the_size_the_model_takes(
    setup: dict, tmp_path: Path, make_run, make_yolo_dataset
) -> None:
    # config.yaml says 64 (as runs trained on a store used to record) but the model takes 32x32.
    run = make_run(tmp_path / "run", setup["model"], setup["store"], names=YOLO_NAMES, size=64)
    result = evaluate(run, data=make_yolo_dataset(tmp_path / "yolo"))
    assert result["samples"] == 2 and result["names"] == YOLO_NAMES


def test_predict_probs_returns_truth_and_sigmoid_probabilities(setup: dict) -> None:
    source = yolol_tf.data.open_data(str(setup["store"]), size=32)
    y_true, y_prob = predict_probs(setup["model"], source.dataset("test", 16), "sigmoid")
    assert y_true.shape == y_prob.shape == (40, 3)
    assert np.all((y_prob > 0) & (y_prob < 1))
    # Order-free comparison: the same multiset of probabilities as the model on the raw arrays.
    np.testing.assert_allclose(np.sort(y_prob, axis=0), np.sort(setup["y_prob"], axis=0), atol=1e-5)


def test_single_label_model_reports_accuracy(
    setup: dict, tmp_path: Path, make_crops, make_store, make_run
) -> None:
    images, labels = make_crops(12, pattern="channel", seed=5)
    one_hot = np.eye(3, dtype=np.float32)[labels.argmax(axis=1)]
    store = make_store(tmp_path / "store", {"test": (images, one_hot)}, NAMES)
    run = make_run(tmp_path / "run", setup["model"], store, activation="softmax")
    result = evaluate(run)
    probs = _model_probs(setup["model"], images, "softmax")
    assert result["tuned"]["accuracy"] == pytest.approx(
        skm.accuracy_score(one_hot.argmax(1), probs.argmax(1))
    )
    assert "accuracy (argmax)" in format_report(result)


def test_sign_mnist_run_reports_accuracy_on_its_held_back_test_csv(
    tmp_path: Path, sign_mnist_csv, make_tiny_model, make_run
) -> None:
    letters = [c for c in range(25) if c != 9]  # "J" never occurs, as in the real data
    train = sign_mnist_csv(tmp_path / "train.csv", (letters * 2)[:30], seed=1)  # every letter
    test = sign_mnist_csv(tmp_path / "test.csv", letters[5:17], seed=2)
    raw = np.loadtxt(test, delimiter=",", skiprows=1, dtype=np.int64)
    labels, images = raw[:, 0], raw[:, 1:].reshape(-1, 28, 28, 1).astype(np.uint8)
    model = make_tiny_model(24, (28, 28, 1))
    names = [chr(ord("A") + i) for i in letters]  # the 24 letters train.csv holds
    run = make_run(tmp_path / "run", model, train, val=test, names=names, activation="softmax")

    result = evaluate(run)
    assert result["samples"] == 12, "the test split is the --val CSV"
    probs = _model_probs(model, images, "softmax")
    classes = np.searchsorted(sorted(set(range(25)) - {9}), labels)  # label value -> output index
    assert result["tuned"]["accuracy"] == pytest.approx(skm.accuracy_score(classes, probs.argmax(1)))
    assert evaluate(run, split="val")["samples"] == 3  # the 10% of train.csv held out for validation


def test_formats_parse(setup: dict) -> None:
    result = evaluate(setup["run"])
    parsed = json.loads(format_report(result, "json"))
    assert parsed["tuned"]["f1_micro"] == pytest.approx(result["tuned"]["f1_micro"])
    rows = list(csv.DictReader(io.StringIO(format_report(result, "csv"))))
    assert [r["class"] for r in rows] == NAMES
    assert float(rows[1]["threshold"]) == pytest.approx(THRESHOLDS[1])
    assert float(rows[0]["f1_at_0.5"]) == pytest.approx(result["default"]["per_class"][0]["f1"])
    table = format_report(result, "table")
    assert "mAP" in table and "Hamming loss" in table and "exact match" in table
    for name in NAMES:
        assert name in table
    with pytest.raises(UserError, match="--format"):
        format_report(result, "xml")


def test_nan_average_precision_is_null_in_json(setup: dict, tmp_path: Path, make_crops, make_store) -> None:
    images, labels = make_crops(9, pattern="channel", seed=6)
    labels[:, 2] = 0  # blue absent from this split
    store = make_store(tmp_path / "store", {"test": (images, labels)}, NAMES)
    result = evaluate(setup["run"], data=store)
    assert json.loads(format_report(result, "json"))["tuned"]["per_class"][2]["ap"] is None
    assert np.isfinite(result["tuned"]["map"]), "mAP averages the classes that occur"


def test_cli_evaluate_writes_json_and_prints_table(setup: dict, tmp_path: Path, capsys, cli) -> None:
    out = tmp_path / "report.json"
    assert cli("evaluate", str(setup["run"]), "--format", "json", "--out", str(out)) == 0
    assert json.loads(out.read_text())["samples"] == 40
    assert cli("evaluate", str(setup["run"]), "--split", "val") == 0
    assert "F1 micro" in capsys.readouterr().out


def test_clean_errors(setup: dict, tmp_path: Path, capsys, cli, make_tiny_model, make_run) -> None:
    assert cli("evaluate", str(tmp_path / "nope")) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "Traceback" not in err
    assert cli("evaluate", str(setup["run"]), "--split", "holdout") == 2
    assert "holdout" in capsys.readouterr().err
    assert cli("evaluate", str(setup["run"]), "--format", "xml") == 2
    wide = make_run(
        tmp_path / "wide", make_tiny_model(4, body="colour"), setup["store"], names=NAMES + ["date"]
    )
    with pytest.raises(UserError, match="4 classes but the data"):
        evaluate(wide)
    (tmp_path / "broken.keras").write_text("not a model")
    assert cli("evaluate", str(tmp_path / "broken.keras"), "--data", str(setup["store"])) == 2
    assert "cannot load the Keras model" in capsys.readouterr().err


def _same_figures(result: dict, reference: dict, atol: float) -> None:
    for key in ("tuned", "default"):
        for name in ("map", "f1_micro", "f1_macro", "hamming_loss", "exact_match"):
            assert result[key][name] == pytest.approx(reference[key][name], abs=atol), f"{key} {name}"


def test_exports_evaluate_like_the_keras_model(setup: dict, tmp_path: Path, capsys, cli, make_run) -> None:
    from yolol_tf.inference.export import export

    # An export inside a run folder finds the run's data through its config.yaml, like best.keras.
    run = make_run(tmp_path / "run", setup["model"], setup["store"], thresholds=THRESHOLDS)
    reference = evaluate(run)
    formats = ["savedmodel", "tflite"]
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx  # noqa: F401

        formats.append("onnx")
    except ImportError:
        pass
    for fmt in formats:
        path = export(run, fmt, verbose=False).path
        result = evaluate(path)
        assert result["model"] == str(path) and result["samples"] == 40 and result["names"] == NAMES
        # Float32 exports keep the run's thresholds and agree with Keras within 1e-4.
        assert [row["threshold"] for row in result["tuned"]["per_class"]] == pytest.approx(THRESHOLDS)
        _same_figures(result, reference, 1e-6)
        assert cli("evaluate", str(path), "--format", "json") == 0
        assert json.loads(capsys.readouterr().out)["samples"] == 40


@pytest.mark.large
def test_int8_export_is_evaluated_at_its_own_thresholds(setup: dict, tmp_path: Path, make_run) -> None:
    from yolol_tf.inference.export import export

    run = make_run(tmp_path / "run", setup["model"], setup["store"], thresholds=THRESHOLDS)
    exported = export(run, "tflite", quantize="int8", num_calibration=24, verbose=False)
    result = evaluate(exported.path, split="val")
    assert [row["threshold"] for row in result["tuned"]["per_class"]] == pytest.approx(exported.thresholds)
    assert result["tuned"]["map"] == pytest.approx(exported.export_map, abs=1e-9)  # checked on val too
    assert evaluate(run, split="val")["tuned"]["map"] - result["tuned"]["map"] <= 0.02


def test_renamed_classes_are_reported_as_a_warning(setup: dict, tmp_path: Path, make_run) -> None:
    run = make_run(tmp_path / "run", setup["model"], setup["store"], names=["x", "y", "z"])
    result = evaluate(run)
    assert result["warnings"] and "class names differ" in result["warnings"][0]
    assert "warning: class names differ" in format_report(result)


@pytest.fixture
def tiny_fit(make_tiny_model, make_crops):
    """``tiny_fit(run, epochs=2, initial_epoch=0, seed=7)``: a short fit logging to TensorBoard in run/logs."""
    import keras

    def fit(run: Path, epochs: int = 2, initial_epoch: int = 0, seed: int = 7):
        model = make_tiny_model(body="colour", seed=seed)
        loss = keras.losses.BinaryCrossentropy(from_logits=True)
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss)
        images, labels = make_crops(16, pattern="channel", seed=seed)
        tensorboard = keras.callbacks.TensorBoard(log_dir=str(run / "logs"))
        return model.fit(
            images.astype("float32"),
            labels,
            validation_split=0.25,
            epochs=epochs,
            initial_epoch=initial_epoch,
            batch_size=8,
            callbacks=[tensorboard],
            verbose=0,
        )

    return fit


def test_history_reads_tensorboard_scalars(tmp_path: Path, capsys, cli, tiny_fit) -> None:
    from yolol_tf.training.history import read_history

    run = tmp_path / "run"
    fit = tiny_fit(run)
    table = read_history(run)
    assert list(table.index) == [0, 1]
    assert {"train/epoch_loss", "validation/epoch_loss"} <= set(table.columns)
    np.testing.assert_allclose(table["train/epoch_loss"], fit.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(table["validation/epoch_loss"], fit.history["val_loss"], rtol=1e-5)

    out = tmp_path / "history.csv"
    assert cli("history", str(run), "--out", str(out)) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2
    assert float(rows[1]["validation/epoch_loss"]) == pytest.approx(fit.history["val_loss"][1])
    assert cli("history", str(run)) == 0
    assert "train/epoch_loss" in capsys.readouterr().out
    assert cli("history", str(tmp_path / "missing")) == 2


def test_history_of_a_resumed_run_keeps_the_rewritten_epochs(tmp_path: Path, tiny_fit) -> None:
    import time

    from yolol_tf.training.history import read_history

    run = tmp_path / "run"
    first = tiny_fit(run, epochs=2)
    time.sleep(1.1)  # event files are named by the second they are opened
    resumed = tiny_fit(run, epochs=3, initial_epoch=1, seed=8)  # redoes epoch 1, then epoch 2
    table = read_history(run)
    assert list(table.index) == [0, 1, 2]
    expected = [first.history["loss"][0], *resumed.history["loss"]]
    np.testing.assert_allclose(table["train/epoch_loss"], expected, rtol=1e-5)

    # A process killed mid-write leaves a truncated record; what was written before it still reads.
    newest = max((run / "logs" / "train").iterdir(), key=lambda p: p.name)
    newest.write_bytes(newest.read_bytes()[:-7])
    assert len(read_history(run)) >= 2
