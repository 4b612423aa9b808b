"""Each model's measured training defaults: under the YAML and the flags, above the shared defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from yolol_tf.models import MODEL_NAMES, get_spec
from yolol_tf.training import TrainConfig, load_config
from yolol_tf.training.config import model_defaults


def test_model_defaults_are_known_settings() -> None:
    fields = set(TrainConfig.__dataclass_fields__)
    for name in MODEL_NAMES:
        assert set(get_spec(name).train_defaults) <= fields, name


@pytest.mark.parametrize("model", [m for m in MODEL_NAMES if get_spec(m).train_defaults])
def test_load_config_applies_the_model_defaults(model: str) -> None:
    config = load_config(None, {"model": model})
    for key, value in model_defaults(model).items():
        assert getattr(config, key) == value, key
    # TrainConfig itself keeps the shared defaults.
    plain = TrainConfig(model=model)
    changed = [k for k, v in model_defaults(model).items() if getattr(plain, k) != v]
    assert changed, "a model's defaults should differ from the shared ones"


def test_yaml_and_flags_win_over_model_defaults(tmp_path: Path) -> None:
    model = next(m for m in MODEL_NAMES if "epochs" in get_spec(m).train_defaults)
    preset = tmp_path / "p.yaml"
    preset.write_text(f"model: {model}\nepochs: 3\n")
    assert load_config(preset).epochs == 3
    assert load_config(preset, {"epochs": 5}).epochs == 5
    assert load_config(None, {"model": model, "epochs": 7}).epochs == 7
    # A model chosen by the flags takes that model's defaults, not the YAML model's.
    other = tmp_path / "o.yaml"
    other.write_text("model: dense\n")
    assert load_config(other, {"model": model}).epochs == model_defaults(model)["epochs"]


def test_unknown_model_is_left_to_validate() -> None:
    assert model_defaults("nope") == {}


def test_weights_flag_merges_into_model_options(tmp_path: Path, cli, capsys) -> None:
    from yolol_tf.training.config import with_model_options

    preset = tmp_path / "p.yaml"
    preset.write_text("model: lite0\nmodel_options: {dropout: 0.3}\n")
    config = with_model_options(load_config(preset), weights="imagenet")
    assert config.model_options == {"dropout": 0.3, "weights": "imagenet"}
    assert with_model_options(config, weights=None) is config
    # The flag reaches the model: a weights file that does not exist is named before training.
    status = cli("train", "lite0", "--config", str(preset), "--weights", str(tmp_path / "none.h5"),
                 "--epochs", "1", "--steps-per-epoch", "1", "--out", str(tmp_path / "run"))  # fmt: skip
    assert status != 0
    assert "none.h5" in capsys.readouterr().err


def test_tune_refuses_a_warmup_the_best_configuration_could_not_train() -> None:
    from yolol_tf.errors import UserError
    from yolol_tf.tuning.config import TuneConfig, validate

    validate(TuneConfig(epochs=5, warmup_epochs=2, train_best=True, train_epochs=3))
    with pytest.raises(UserError, match=r"less than --train-epochs \(2\), .* Received: warmup_epochs=2"):
        validate(TuneConfig(epochs=5, warmup_epochs=2, train_best=True, train_epochs=2))


def test_pinned_model_options_keep_a_resumed_run_on_its_network() -> None:
    from yolol_tf.training.config import TrainConfig, pin_model_options

    config = TrainConfig(model="cnn", model_options={"width": 8})
    assert pin_model_options(config, None).model_options == {"width": 8, "pool_shortcut": True}  # a new run
    recorded_before_it = {"width": 8}
    assert pin_model_options(config, recorded_before_it).model_options["pool_shortcut"] is False
    assert pin_model_options(config, {"pool_shortcut": True}).model_options["pool_shortcut"] is True
    given = dataclasses.replace(config, model_options={"pool_shortcut": False})
    assert pin_model_options(given, {"pool_shortcut": True}) == given  # a value given now stays
    assert pin_model_options(TrainConfig(model="dense"), {}) == TrainConfig(model="dense")  # none to pin
