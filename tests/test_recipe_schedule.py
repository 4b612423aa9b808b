"""The learning rate over a phase: a linear warmup into the cosine decay or a constant rate, checked by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from yolol_tf.errors import UserError


def _rates(schedule, steps: list[int]) -> list[float]:
    if not callable(schedule):
        return [float(schedule)] * len(steps)
    return [float(schedule(step)) for step in steps]


def test_cosine_rises_linearly_over_the_warmup_then_decays_over_the_remaining_steps() -> None:
    from yolol_tf.training.schedules import learning_rate

    # 4 epochs of 10 steps, 1 warmup epoch: 0 -> 1e-3 over steps 0..10, then a cosine over steps 10..40.
    rates = _rates(learning_rate("cosine", 1e-3, 4, 10, 1.0), [0, 5, 10, 25, 40])
    half_way = 1e-3 * 0.5 * (1 + math.cos(math.pi * 15 / 30))  # = 5e-4
    np.testing.assert_allclose(rates, [0.0, 5e-4, 1e-3, half_way, 0.0], atol=1e-9)
    # Without a warmup the cosine starts at the peak and spans every step.
    np.testing.assert_allclose(
        _rates(learning_rate("cosine", 1e-3, 4, 10), [0, 20, 40]), [1e-3, 5e-4, 0.0], atol=1e-9
    )


def test_none_rises_over_the_warmup_then_stays_and_plateau_keeps_a_plain_rate() -> None:
    from yolol_tf.training.schedules import learning_rate

    # Half an epoch of 10 steps: 5 warmup steps.
    rates = _rates(learning_rate("none", 1e-3, 3, 10, 0.5), [0, 2, 5, 29])
    np.testing.assert_allclose(rates, [0.0, 4e-4, 1e-3, 1e-3], atol=1e-9)
    assert learning_rate("none", 1e-3, 3, 10) == 1e-3
    assert learning_rate("plateau", 1e-3, 3, 10) == 1e-3  # ReduceLROnPlateau needs a plain rate


def test_a_warmup_schedule_survives_a_save_and_load() -> None:
    from yolol_tf.training.schedules import LinearWarmup

    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(LinearWarmup(2e-3, 4))
    )
    assert float(restored(2)) == pytest.approx(1e-3)


def test_compile_model_gives_the_optimizer_the_warmup_and_the_weight_average() -> None:
    from yolol_tf.models import build_model
    from yolol_tf.training import TrainConfig, compile_model

    info = SimpleNamespace(single_label=False, num_classes=3, counts={"train": 40})
    config = TrainConfig(model="cnn", epochs=4, batch_size=4, warmup_epochs=1.0, ema_decay=0.9, jit=False)
    model = build_model("cnn", (32, 32, 3), 3, width=4, depths=(1,))
    compile_model(model, config, info, jit_compile=False)  # 10 steps per epoch
    optimizer = model.optimizer
    assert float(optimizer.learning_rate) == 0.0, "the first step of a warmup has rate 0"
    assert optimizer.use_ema and optimizer.ema_momentum == pytest.approx(0.9)
    plain = compile_model(build_model("cnn", (32, 32, 3), 3, width=4, depths=(1,)), TrainConfig(model="cnn"), info,
                          jit_compile=False)  # fmt: skip
    assert not plain.optimizer.use_ema and float(plain.optimizer.learning_rate) == pytest.approx(1e-3)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"warmup_epochs": -1.0}, "warmup_epochs=-1.0"),
        ({"warmup_epochs": 4.0, "epochs": 4}, "warmup_epochs=4.0"),
        # Two phases: the warmup belongs to the whole network's 3 epochs.
        ({"warmup_epochs": 3.0, "epochs": 5, "head_epochs": 2}, r"\(3\)"),
        ({"warmup_epochs": 1.0, "schedule": "plateau"}, "schedule='plateau'"),
        ({"ema_decay": 1.0}, "ema_decay=1.0"),
        ({"ema_decay": -0.1}, "ema_decay=-0.1"),
    ],
)
def test_bad_warmup_and_averaging_settings_are_named(settings: dict, message: str) -> None:
    from yolol_tf.training import TrainConfig
    from yolol_tf.training.config import validate

    with pytest.raises(UserError, match=message):
        validate(TrainConfig(model="cnn", **{"epochs": 4, **settings}))
    validate(TrainConfig(model="cnn", epochs=5, head_epochs=2, warmup_epochs=2.5, ema_decay=0.999))


class _FirstRates(keras.callbacks.Callback):
    rates: list[float] = []

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            type(self).rates.append(float(self.model.optimizer.learning_rate))


def test_two_phase_fine_tuning_warms_up_the_whole_network_phase_only(
    store, tmp_path, tiny_train_config
) -> None:
    from yolol_tf.training import train

    _FirstRates.rates = []
    config = tiny_train_config(store, tmp_path / "run", epochs=3, head_epochs=1, warmup_epochs=1.0,
                               learning_rate=2e-3, steps_per_epoch=2)  # fmt: skip
    train(config, callbacks=[_FirstRates()], verbose=0)
    head, whole_start, whole_after = _FirstRates.rates
    assert head == pytest.approx(2e-3), "the head phase starts at its peak"
    assert whole_start == 0.0, "the whole-network phase starts its warmup from 0"
    assert whole_after == pytest.approx(2e-3 * 0.1), "after one warmup epoch: the phase's peak"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, make_store):
    return make_store(tmp_path_factory.mktemp("store"))
