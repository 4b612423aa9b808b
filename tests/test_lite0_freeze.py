"""``freeze_backbone: true`` is linear probing: the backbone stays frozen for the whole run, in one phase, and
a ``head_epochs`` beside it is refused before anything trains."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from yolol_tf.errors import UserError


class _Watch(keras.callbacks.Callback):
    """Records the first backbone kernel, a backbone BN's moving mean and the logits kernel per epoch."""

    def on_train_begin(self, logs=None):
        if not hasattr(self, "seen"):
            self.seen = [self._weights()]

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(self._weights())

    def _weights(self):
        return (
            np.array(self.model.get_layer("stem_conv").kernel),
            np.array(self.model.get_layer("stem_bn").moving_mean),
            np.array(self.model.get_layer("logits").kernel),
        )


def _lite0_config(tiny_train_config, store: Path, out: Path, **overrides):
    options = {"dropout": 0.0, "freeze_backbone": True, **overrides.pop("model_options", {})}
    return tiny_train_config(store, out, model="lite0", model_options=options, steps_per_epoch=2, **overrides)


def test_a_frozen_backbone_stays_frozen_for_the_whole_run(
    tmp_path: Path, make_store, tiny_train_config, random_batch, capsys: pytest.CaptureFixture
) -> None:
    from yolol_tf.training import train

    store = make_store(tmp_path / "store", counts={"train": 32, "val": 16})
    # A local weights file counts as pretrained: without freeze_backbone this run would have two phases.
    weights = tmp_path / "start.weights.h5"
    keras.utils.set_random_seed(0)
    from yolol_tf.models import build_model

    start = build_model("lite0", (32, 32, 3), 3, dropout=0.0, bn_momentum=0.0)
    start(random_batch((32, 32, 3), 3, batch=8)[0], training=True)  # BN statistics of real activations
    start.save_weights(weights)
    config = _lite0_config(tiny_train_config, store, tmp_path / "run", epochs=3,
                           model_options={"weights": str(weights)})  # fmt: skip
    watch = _Watch()
    train(config, callbacks=[watch], verbose=0)
    (kernel0, mean0, logits0), *_, (kernel3, mean3, logits3) = watch.seen
    assert len(watch.seen) == 4, "one phase of three epochs"
    np.testing.assert_array_equal(kernel0, kernel3)  # no epoch trains the backbone
    np.testing.assert_array_equal(mean0, mean3)  # its BN runs in inference mode throughout
    assert np.abs(logits3 - logits0).max() > 1e-4, "the head trains"
    assert "Phase" not in capsys.readouterr().err


def test_head_epochs_beside_a_frozen_backbone_is_refused_before_training(
    tmp_path: Path, make_store, tiny_train_config
) -> None:
    from yolol_tf.training import train

    store = make_store(tmp_path / "store", counts={"train": 8, "val": 8})
    config = _lite0_config(tiny_train_config, store, tmp_path / "run", epochs=3, head_epochs=1)
    with pytest.raises(UserError, match=r"freeze_backbone: true .* Received: head_epochs=1"):
        train(config)
    assert not (tmp_path / "run").exists()


def test_phases_by_freeze_backbone_and_head_epochs(tiny_train_config) -> None:
    from yolol_tf.models.finetune import check_head_epochs
    from yolol_tf.training.loop import _phases

    def phases(**options):
        head = options.pop("head_epochs", None)
        config = tiny_train_config("data", "run", model="lite0", model_options=options, epochs=5,
                                   head_epochs=head)  # fmt: skip
        check_head_epochs(config.model_options, config.head_epochs)
        return [(p.first, p.end, p.backbone) for p in _phases(config, Path("run"))]

    assert phases(weights="imagenet") == [(0, 2, False), (2, 5, True)]  # the two-phase default
    assert phases(weights="imagenet", head_epochs=3) == [(0, 3, False), (3, 5, True)]
    assert phases(weights="imagenet", freeze_backbone=True) == [(0, 5, True)]  # one phase, frozen as built
    assert phases(weights="imagenet", freeze_backbone=True, head_epochs=0) == [(0, 5, True)]
    assert phases() == [(0, 5, True)]
