"""Fine-tuning in two phases: the head alone with the backbone frozen, then the whole network, resumable."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from yolol_tf import runs
from yolol_tf.errors import UserError


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, make_store) -> Path:
    return make_store(tmp_path_factory.mktemp("store"))


class _Watch(keras.callbacks.Callback):
    """Records a backbone kernel and the logits kernel at the start of training and after each epoch."""

    def on_train_begin(self, logs=None):
        if not hasattr(self, "seen"):
            self.seen = [self._kernels()]

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(self._kernels())

    def _kernels(self):
        from yolol_tf.models.finetune import backbone_layers

        return np.array(backbone_layers(self.model)[0].weights[0]), np.array(
            self.model.get_layer("logits").kernel
        )


def _history_epochs(run: Path) -> list[int]:
    return [int(line.split(",")[0]) for line in (run / "history.csv").read_text().splitlines()[1:]]


def test_the_head_trains_alone_then_the_whole_network(store, tmp_path, tiny_train_config) -> None:
    from yolol_tf.training import train

    watch = _Watch()
    run = train(
        tiny_train_config(store, tmp_path / "run", epochs=3, head_epochs=1), callbacks=[watch], verbose=0
    )
    (b0, h0), (b1, h1), (_, _), (b3, _) = watch.seen
    np.testing.assert_array_equal(b0, b1)  # phase 1: the backbone is frozen
    assert not np.allclose(h0, h1), "phase 1 trains the head"
    assert not np.allclose(b1, b3), "phase 2 trains the backbone"
    assert _history_epochs(run) == [0, 1, 2]
    assert json.loads((run / runs.FINISHED_MARKER).read_text())["best_epoch"] == runs.read_best(run)[1] + 1
    assert not (run / runs.HEAD_MODEL).exists() and not (run / runs.BACKUP_DIR).exists()


def test_a_run_killed_between_the_phases_resumes_with_the_whole_network(
    store, tmp_path, monkeypatch, tiny_train_config
) -> None:
    from yolol_tf.training import callbacks, train

    run = tmp_path / "run"
    config = tiny_train_config(store, run, epochs=3, head_epochs=1)
    head_done = callbacks.HeadDone.on_train_end

    def killed_after_head(self, logs=None):
        head_done(self, logs)
        raise KeyboardInterrupt  # head.keras is written, the whole network has not started

    with monkeypatch.context() as patch:
        patch.setattr(callbacks.HeadDone, "on_train_end", killed_after_head)
        with pytest.raises(KeyboardInterrupt):
            train(config, verbose=0)
    assert (run / runs.HEAD_MODEL).is_file() and _history_epochs(run) == [0]

    watch = _Watch()
    train(config, resume=True, callbacks=[watch], verbose=0)
    assert len(watch.seen) == 3, "the resumed run trained epochs 2 and 3 only"
    assert not np.allclose(watch.seen[0][0], watch.seen[-1][0]), "the backbone trains in phase 2"
    assert _history_epochs(run) == [0, 1, 2]


def test_pretrained_weights_mean_two_phases_unless_told_and_bad_settings_are_named(tiny_train_config) -> None:
    from yolol_tf.training.config import DEFAULT_HEAD_EPOCHS, head_epochs, validate

    config = dataclasses.replace(tiny_train_config("data", "run", epochs=8), data=None)
    assert head_epochs(config) == 0
    pretrained = dataclasses.replace(config, model_options={**config.model_options, "weights": "imagenet"})
    assert head_epochs(pretrained) == DEFAULT_HEAD_EPOCHS
    assert head_epochs(dataclasses.replace(pretrained, head_epochs=0)) == 0
    with pytest.raises(UserError, match="head_epochs must be in 0..epochs-1"):
        validate(dataclasses.replace(config, head_epochs=8))
    with pytest.raises(UserError, match="finetune_lr_scale"):
        validate(dataclasses.replace(config, finetune_lr_scale=0))
