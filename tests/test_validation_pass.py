"""One validation pass per epoch: MAPCallback's val_loss and metrics are Keras' own ``evaluate`` figures, and a
training run logs them (history, TensorBoard) with the validation split run through the model once."""

from __future__ import annotations

from types import SimpleNamespace

import keras
import numpy as np
import pytest


@pytest.mark.parametrize("single_label", [False, True])
def test_validation_figures_equal_keras_evaluate(single_label, make_crops, make_tiny_model) -> None:
    import tensorflow as tf

    from yolol_tf.training.callbacks import MAPCallback
    from yolol_tf.training.compile import training_metrics
    from yolol_tf.training.losses import get_loss

    info = SimpleNamespace(single_label=single_label, num_classes=3)
    x, y = make_crops(40, num_classes=3, seed=1)
    val_x, val_y = make_crops(23, num_classes=3, seed=2)  # a last batch of 7: means weighted by samples
    if single_label:
        rng = np.random.default_rng(0)
        y, val_y = (np.eye(3, dtype="float32")[rng.integers(0, 3, len(a))] for a in (y, val_y))
    model = make_tiny_model(3)
    loss = get_loss("cce" if single_label else "bce", label_smoothing=0.1)
    model.compile(keras.optimizers.Adam(1e-2), loss, metrics=training_metrics(info))
    val_ds = tf.data.Dataset.from_tensor_slices((val_x, val_y)).batch(8)
    callback = MAPCallback(val_ds, "softmax" if single_label else "sigmoid", training_metrics(info))
    history = model.fit(x, y, batch_size=8, epochs=2, callbacks=[callback], verbose=0)

    expected = model.evaluate(val_ds, return_dict=True, verbose=0)
    names = {"loss", "accuracy"} if single_label else {"loss", "pr_auc", "f1_micro", "f1_macro"}
    assert set(expected) == names
    for name, value in expected.items():
        # Both epochs' figures are logged; the last is the model evaluate sees.
        assert len(history.history[f"val_{name}"]) == 2
        assert history.history[f"val_{name}"][-1] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    assert 0.0 < history.history["val_map"][-1] <= 1.0


def test_a_run_logs_validation_figures_from_one_pass(make_store, tmp_path, tiny_train_config, monkeypatch):
    from yolol_tf.models import outputs
    from yolol_tf.training import train
    from yolol_tf.training.history import read_history

    store = make_store(tmp_path / "store")
    passes = []
    forward = outputs.predict_logits
    monkeypatch.setattr(outputs, "predict_logits", lambda *a, **k: passes.append(1) or forward(*a, **k))
    seen = []

    class Epochs(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):
            seen.append("keras evaluate")  # Keras' own validation pass: there must be none

        def on_epoch_end(self, epoch, logs=None):
            seen.append((len(passes), dict(logs)))

    run = train(tiny_train_config(store, tmp_path / "run", epochs=2), callbacks=[Epochs()], verbose=0)
    assert "keras evaluate" not in seen
    assert [count for count, _ in seen] == [1, 2]  # one pass over the validation split per epoch
    logged = [logs for _, logs in seen]
    for logs in logged:
        assert {"val_loss", "val_map", "val_pr_auc", "val_f1_micro", "val_f1_macro"} <= set(logs)
        assert np.isfinite(logs["val_loss"]) and logs["val_loss"] > 0
    table = read_history(run)
    np.testing.assert_allclose(table["validation/epoch_loss"], [s["val_loss"] for s in logged], rtol=1e-5)
    np.testing.assert_allclose(table["validation/epoch_map"], [s["val_map"] for s in logged], rtol=1e-5)
