"""Weight averaging (``ema_decay``): validation and checkpoints use the average, training the raw weights, and
a run killed and resumed goes on exactly as one that was never stopped."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from yolol_tf.errors import UserError


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, make_store) -> Path:
    return make_store(tmp_path_factory.mktemp("store"))


class _LastStep(keras.callbacks.Callback):
    """The raw weights and the optimizer's averages after the last step of training, by variable path."""

    def on_train_batch_end(self, batch, logs=None):
        optimizer = self.model.optimizer
        pairs = zip(optimizer._trainable_variables, optimizer._model_variables_moving_average, strict=True)
        self.raw = {v.path: np.array(v) for v in optimizer._trainable_variables}
        self.average = {v.path: np.array(a) for v, a in pairs}


def test_best_and_last_checkpoints_hold_the_averaged_weights(store, tmp_path, tiny_train_config) -> None:
    from yolol_tf.models import load_model
    from yolol_tf.training import train

    last_step = _LastStep()
    run = train(tiny_train_config(store, tmp_path / "run", ema_decay=0.9, steps_per_epoch=4), callbacks=[last_step],
                verbose=0)  # fmt: skip
    for name in ("best.keras", "last.keras"):
        saved = {v.path: np.array(v) for v in load_model(run / name).trainable_weights}
        assert saved.keys() == last_step.average.keys()
        for path, value in saved.items():
            np.testing.assert_allclose(value, last_step.average[path], rtol=1e-6, atol=1e-7, err_msg=path)
        gap = max(np.abs(saved[p] - last_step.raw[p]).max() for p in saved)
        assert gap > 1e-4, f"{name} holds the raw weights"


def _fit(backup: Path, last: Path, epochs: int, stop_at: int | None = None) -> dict:
    """A tiny model fitted with the run's callback order: the average in, MAP-like readers, the average out, the
    backup. Fixed data in a fixed order, so a resumed run sees what an uninterrupted one does."""
    from yolol_tf.training.callbacks import EMAWeights, LastCheckpoint

    class Stop(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == stop_at:
                raise KeyboardInterrupt  # killed after the backup of the epoch before

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 6)).astype("float32"), (rng.random((32, 2)) < 0.5).astype("float32")
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(8, activation="relu")(inputs)))
    model.compile(keras.optimizers.AdamW(1e-2, use_ema=True, ema_momentum=0.8),
                  keras.losses.BinaryCrossentropy(from_logits=True))  # fmt: skip
    ema = EMAWeights()
    callbacks = [ema, Stop(), LastCheckpoint(last), ema.swap_back,
                 keras.callbacks.BackupAndRestore(str(backup), double_checkpoint=True)]  # fmt: skip
    history = model.fit(x, y, batch_size=8, epochs=epochs, validation_data=(x, y), shuffle=False, callbacks=callbacks,
                        verbose=0)  # fmt: skip
    optimizer = model.optimizer
    return {
        "history": history.history,
        "weights": [np.array(v) for v in model.weights],  # after fit: the average (Keras' finalize)
        "iterations": int(optimizer.iterations),
    }


def test_a_run_killed_and_resumed_with_averaging_goes_on_exactly(tmp_path) -> None:
    reference = _fit(tmp_path / "ref_backup", tmp_path / "ref_last.keras", 2)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "backup", tmp_path / "last.keras", 2, stop_at=1)
    resumed = _fit(tmp_path / "backup", tmp_path / "last.keras", 2)

    assert resumed["iterations"] == reference["iterations"] == 8
    for name in ("loss", "val_loss"):
        np.testing.assert_allclose(resumed["history"][name], reference["history"][name][1:], rtol=1e-6)
    for ours, theirs in zip(resumed["weights"], reference["weights"], strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    # last.keras of the final epoch: the same averaged weights.
    for ours, theirs in zip(
        _weights(tmp_path / "last.keras"), _weights(tmp_path / "ref_last.keras"), strict=True
    ):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)


def _weights(path: Path) -> list[np.ndarray]:
    return [np.array(v) for v in keras.saving.load_model(path).weights]


def test_validation_loss_is_the_averaged_models(tmp_path) -> None:
    from yolol_tf.training.callbacks import EMAWeights

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(16, 4)).astype("float32"), (rng.random((16, 1)) < 0.5).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.5, use_ema=True, ema_momentum=0.9),
                  keras.losses.BinaryCrossentropy(from_logits=True))  # fmt: skip
    ema = EMAWeights()
    history = model.fit(x, y, batch_size=4, epochs=1, validation_data=(x, y), callbacks=[ema, ema.swap_back],
                        verbose=0)  # fmt: skip
    # After fit the model holds the average (Keras' finalize_variable_values): evaluate it directly.
    assert model.evaluate(x, y, verbose=0) == pytest.approx(history.history["val_loss"][0], rel=1e-5)


def test_averaging_is_refused_on_the_multi_worker_loop(
    monkeypatch, store, tmp_path, tiny_train_config
) -> None:
    from yolol_tf.training import distribute, train

    monkeypatch.setattr(distribute, "needs_custom_loop", lambda strategy: True)
    with pytest.raises(UserError, match="ema_decay=0.9"):
        train(tiny_train_config(store, tmp_path / "run", ema_decay=0.9), verbose=0)
