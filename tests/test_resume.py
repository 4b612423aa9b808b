"""A run killed at any moment resumes without losing or repeating work: the backup, best.keras, history."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from yolol_tf import runs


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, make_store) -> Path:
    return make_store(tmp_path_factory.mktemp("store"))


class _Count(keras.callbacks.Callback):
    epochs: list[int]

    def on_train_begin(self, logs=None):
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)


def _history_epochs(run: Path) -> list[int]:
    return [int(line.split(",")[0]) for line in (run / "history.csv").read_text().splitlines()[1:]]


def test_a_kill_after_the_last_epoch_resumes_into_the_report(
    store, tmp_path, monkeypatch, tiny_train_config
) -> None:
    from yolol_tf.training import report, train

    run = tmp_path / "run"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # a kill between the last epoch and metrics.json

    with monkeypatch.context() as patch:
        patch.setattr(report, "write_report", killed)
        with pytest.raises(KeyboardInterrupt):
            train(tiny_train_config(store, run, epochs=2), verbose=0)
    assert (run / runs.BACKUP_DIR).is_dir() and (run / runs.FIT_DONE).is_file()
    assert not (run / runs.FINISHED_MARKER).exists()

    counter = _Count()
    train(tiny_train_config(store, run, epochs=2), resume=True, callbacks=[counter], verbose=0)
    assert not hasattr(counter, "epochs"), "the resumed run trained again"
    assert _history_epochs(run) == [0, 1]
    metrics = json.loads((run / runs.FINISHED_MARKER).read_text())
    assert metrics["best_epoch"] == runs.read_best(run)[1] + 1
    assert not (run / runs.BACKUP_DIR).exists() and not (run / runs.FIT_DONE).exists()


def test_a_kill_before_an_epoch_is_backed_up_trains_it_once_and_keeps_the_best_consistent(
    store, tmp_path, monkeypatch, tiny_train_config
) -> None:
    from yolol_tf.training import train

    run = tmp_path / "run"
    backup_epoch_end = keras.callbacks.BackupAndRestore.on_epoch_end

    def dies_at_epoch_1(self, epoch, logs=None):
        if epoch == 1:  # epoch 1's checkpoints, history row and best.keras are written; its backup is not
            raise KeyboardInterrupt
        backup_epoch_end(self, epoch, logs)

    with monkeypatch.context() as patch:
        patch.setattr(keras.callbacks.BackupAndRestore, "on_epoch_end", dies_at_epoch_1)
        with pytest.raises(KeyboardInterrupt):
            train(tiny_train_config(store, run, epochs=3), verbose=0)
    assert _history_epochs(run) == [0, 1]

    counter = _Count()
    train(tiny_train_config(store, run, epochs=3), resume=True, callbacks=[counter], verbose=0)
    assert counter.epochs == [1, 2], "the resumed run starts again at the epoch that was not backed up"
    assert _history_epochs(run) == [0, 1, 2], "each epoch exactly once in history.csv"
    history = np.genfromtxt(run / "history.csv", delimiter=",", names=True)
    best_epoch = int(history["epoch"][np.argmax(history["val_map"])])
    assert runs.read_best(run)[1] == best_epoch
    assert json.loads((run / runs.FINISHED_MARKER).read_text())["best_epoch"] == best_epoch + 1


def _shortcut_pools(model_file: Path) -> int:
    from yolol_tf.models import load_model

    return sum(layer.name.endswith("_shortcut_pool") for layer in load_model(model_file).layers)


def test_a_run_resumed_after_a_default_changed_keeps_the_network_it_started_with(
    store, tmp_path, monkeypatch, tiny_train_config
) -> None:
    """A new run writes the cnn's pool_shortcut (ResNet-D, the default since 2026-12-02) into config.yaml; a
    run whose config.yaml predates the option resumes with the strided shortcuts it was started with."""
    import yaml

    from yolol_tf.training import train

    new, old = tmp_path / "new", tmp_path / "old"
    train(tiny_train_config(store, new, epochs=1, steps_per_epoch=1), verbose=0)
    assert yaml.safe_load((new / runs.CONFIG_FILE).read_text())["model_options"]["pool_shortcut"] is True
    assert _shortcut_pools(new / runs.LAST_MODEL) > 0

    backup_epoch_end = keras.callbacks.BackupAndRestore.on_epoch_end

    def dies_at_epoch_1(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt
        backup_epoch_end(self, epoch, logs)

    legacy = tiny_train_config(store, old, epochs=2)
    legacy = dataclasses.replace(legacy, model_options={**legacy.model_options, "pool_shortcut": False})
    with monkeypatch.context() as patch:
        patch.setattr(keras.callbacks.BackupAndRestore, "on_epoch_end", dies_at_epoch_1)
        with pytest.raises(KeyboardInterrupt):
            train(legacy, verbose=0)
    # What a version without the option wrote: no pool_shortcut in config.yaml.
    recorded = yaml.safe_load((old / runs.CONFIG_FILE).read_text())
    del recorded["model_options"]["pool_shortcut"]
    (old / runs.CONFIG_FILE).write_text(yaml.safe_dump(recorded))

    counter = _Count()
    train(tiny_train_config(store, old, epochs=2), resume=True, callbacks=[counter], verbose=0)
    assert counter.epochs == [1]
    assert _shortcut_pools(old / runs.LAST_MODEL) == 0 and _shortcut_pools(old / runs.BEST_MODEL) == 0
    assert yaml.safe_load((old / runs.CONFIG_FILE).read_text())["model_options"]["pool_shortcut"] is False


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def test_rollback_restores_the_best_checkpoint_of_the_backed_up_epochs(tmp_path: Path) -> None:
    run = tmp_path
    _write(run / runs.BEST_MODEL, "epoch 0")
    runs.record_best(run, 0, 0.5)
    runs.retire_best(run)  # epoch 2 is better, but the run dies before epoch 2 is backed up
    _write(run / runs.BEST_MODEL, "epoch 2")
    runs.record_best(run, 2, 0.7)

    assert runs.committed_best(run, 2) == (0.5, 0), "read-only view used by every worker"
    assert runs.committed_best(run, 3) == (0.7, 2)
    runs.rollback_best(run, committed=2)
    assert (run / runs.BEST_MODEL).read_text() == "epoch 0" and runs.read_best(run) == (0.5, 0)


def test_rollback_keeps_a_backed_up_best_and_drops_an_uncommitted_first_one(tmp_path: Path) -> None:
    _write(tmp_path / runs.BEST_MODEL, "epoch 1")
    runs.record_best(tmp_path, 1, 0.6)
    runs.rollback_best(tmp_path, committed=2)
    assert runs.read_best(tmp_path) == (0.6, 1)

    runs.rollback_best(tmp_path, committed=1)  # no earlier best to go back to
    assert runs.read_best(tmp_path) == (None, None) and not (tmp_path / runs.BEST_MODEL).exists()


def test_history_rows_of_epochs_not_backed_up_are_dropped(tmp_path: Path) -> None:
    history = tmp_path / "history.csv"
    history.write_text("epoch,loss\n0,1.0\n1,0.9\n2,0.8\n")
    runs.keep_committed_history(history, 2)
    assert history.read_text().splitlines() == ["epoch,loss", "0,1.0", "1,0.9"]


def test_early_stopping_patience_continues_after_a_resume() -> None:
    from yolol_tf.training.callbacks import ResumableEarlyStopping

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    stopper = ResumableEarlyStopping("val_map", patience=3, mode="max", initial_best=0.9, initial_wait=2)
    stopper.set_model(model)
    model.stop_training = False
    stopper.on_train_begin()
    stopper.on_epoch_end(5, {"val_map": 0.8})  # the third epoch in a row without improvement
    assert model.stop_training

    fresh = ResumableEarlyStopping("val_map", patience=3, mode="max")
    fresh.set_model(model)
    model.stop_training = False
    fresh.on_train_begin()
    fresh.on_epoch_end(5, {"val_map": 0.8})
    assert not model.stop_training
