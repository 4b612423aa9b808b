"""Training: the run folder, resume after a kill, refusing to overwrite, CLI errors, losses, device choice."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.processes import start_python
from yolol_tf.errors import UserError

KILLABLE = "tests.support.killable_train"

RUN_FILES = [
    "config.yaml", "best.keras", "best.json", "last.keras", "labels.json", "history.csv", "metrics.json",
    "plots/loss.png", "plots/metrics.png", "plots/per_class_f1.png", "plots/val_predictions.png",
]  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, make_store) -> Path:
    """32 px "centre" crops of 3 classes: 64 train, 32 val, 16 test."""
    return make_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def finished_run(store: Path, tmp_path_factory: pytest.TempPathFactory, tiny_train_config) -> Path:
    from yolol_tf.training import TrainConfig, train

    # size left at the default (64): the 32-px store decides, and config.yaml must say 32.
    config = tiny_train_config(store, tmp_path_factory.mktemp("runs") / "run", size=TrainConfig().size)
    return train(config, verbose=0)


# --- the run folder ---------------------------------------------------------------------------------


def test_one_epoch_run_writes_the_whole_run_folder(finished_run: Path) -> None:
    for name in RUN_FILES:
        assert (finished_run / name).is_file(), f"{name} missing from the run folder"
    assert list((finished_run / "logs").rglob("events.out.tfevents.*")), "no TensorBoard logs"
    assert not (finished_run / "backup").exists(), "a finished run keeps no backup"
    labels = json.loads((finished_run / "labels.json").read_text())
    assert labels["names"] == ["class0", "class1", "class2"]
    assert len(labels["thresholds"]) == 3 and labels["activation"] == "sigmoid"
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert 0.0 <= metrics["val"]["map"] <= 1.0 and "f1_macro" in metrics["val"]
    assert metrics["test"]["samples"] == 16, "the test split is reported"
    history = (finished_run / "history.csv").read_text().splitlines()
    assert "val_map" in history[0] and "pr_auc" in history[0] and "f1_micro" in history[0]
    assert len(history) == 2, "one row for one epoch"


def test_best_model_loads_without_custom_objects_and_config_repeats_the_run(finished_run: Path) -> None:
    import keras

    from yolol_tf import config as config_lib
    from yolol_tf.training import TrainConfig

    model = keras.saving.load_model(finished_run / "best.keras")
    assert model.predict(np.zeros((2, 32, 32, 3), np.float32), verbose=0).shape == (2, 3)
    again = config_lib.resolve(TrainConfig, finished_run / "config.yaml", {})
    assert again.model == "cnn" and again.epochs == 1 and again.model_options["width"] == 8
    assert again.size == 32, "config.yaml records the size the store holds, not the default"
    assert json.loads((finished_run / "labels.json").read_text())["input_shape"] == [32, 32, 3]


def test_a_size_that_differs_from_the_stores_is_refused(
    store: Path, tmp_path: Path, tiny_train_config
) -> None:
    from yolol_tf.training import train

    with pytest.raises(UserError, match=r"size 48 .* holds 32x32 images"):
        train(tiny_train_config(store, tmp_path / "run", size=48), verbose=0)
    assert not (tmp_path / "run").exists(), "nothing is trained or written"


def test_a_fresh_process_loads_the_best_model_with_our_layers(finished_run: Path, run_python) -> None:
    # Keras finds our BatchNormalization only once its module is imported: load_model sees to that.
    code = "import sys; from yolol_tf.models import load_model; print(load_model(sys.argv[1]).output_shape)"
    done = run_python("-c", code, str(finished_run / "best.keras"), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith(", 3)")


def test_finished_run_is_never_overwritten(finished_run: Path, store: Path, tiny_train_config) -> None:
    from yolol_tf.training import train

    before = (finished_run / "best.keras").stat().st_mtime_ns
    for resume in (False, True):
        with pytest.raises(UserError, match="finished run.*--name or --out"):
            train(tiny_train_config(store, finished_run), resume=resume)
    assert (finished_run / "best.keras").stat().st_mtime_ns == before


def test_unfinished_run_needs_resume(tmp_path: Path, store: Path, tiny_train_config) -> None:
    from yolol_tf.training import train

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("model: cnn\n")
    with pytest.raises(UserError, match="--resume"):
        train(tiny_train_config(store, tmp_path / "run"))
    with pytest.raises(UserError, match="Nothing to resume"):
        train(tiny_train_config(store, tmp_path / "elsewhere"), resume=True)


def test_single_label_csv_trains_softmax_and_reports_accuracy(
    tmp_path: Path, sign_mnist_csv, tiny_train_config
) -> None:
    from yolol_tf.training import train

    # Three letters, each a bright bar at its own height.
    csv = sign_mnist_csv(tmp_path / "train.csv", [i % 3 for i in range(80)], bars=True)
    test_csv = sign_mnist_csv(tmp_path / "test.csv", [i % 3 for i in range(30)], seed=1, bars=True)
    run = train(tiny_train_config(csv, tmp_path / "run", size=28, val=str(test_csv), epochs=2), verbose=0)
    labels = json.loads((run / "labels.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert labels["activation"] == "softmax" and labels["input_shape"] == [28, 28, 1]
    assert "accuracy" in metrics["val"] and metrics["test"]["samples"] == 30
    assert "loss: cce" in (run / "config.yaml").read_text()


# --- resume after SIGKILL ---------------------------------------------------------------------------


@pytest.mark.large
def test_resume_after_sigkill_continues_from_the_last_finished_epoch(
    store: Path, tmp_path: Path, run_python
) -> None:
    run = tmp_path / "run"
    # Its second epoch is slowed, so that it can be killed in the middle of it.
    proc = start_python(
        "-m", KILLABLE, str(store), str(run), "fresh", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    meta = run / "backup" / "training_metadata.json"
    deadline = time.monotonic() + 240
    try:
        while not (meta.is_file() and json.loads(meta.read_text() or "{}").get("epoch", 0) >= 1):
            assert proc.poll() is None, "training ended before the test could kill it"
            assert time.monotonic() < deadline, "no backup of the first epoch appeared"
            time.sleep(0.1)
        time.sleep(0.3)  # inside the (slowed) second epoch
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (run / "metrics.json").exists()

    resumed = run_python("-m", KILLABLE, str(store), str(run), "resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Epoch 1/3" not in resumed.stdout and "Epoch 2/3" in resumed.stdout, resumed.stdout
    epochs = [int(line.split(",")[0]) for line in (run / "history.csv").read_text().splitlines()[1:]]
    assert epochs == [0, 1, 2], "each epoch exactly once in history.csv"
    assert (run / "metrics.json").is_file() and not (run / "backup").exists()


# --- CLI --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "transformer"], "Unknown model 'transformer'"),
        (["train", "cnn", "--data", "/no/such/data.yaml"], "/no/such/data.yaml"),
        (["train", "cnn", "--config", "{bad_yaml}"], "'epoch'"),
    ],
)
def test_cli_errors_are_one_clean_message(args: list[str], message: str, tmp_path: Path, run_cli) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: cnn\nepoch: 3\n")
    result = run_cli(*[a.replace("{bad_yaml}", str(bad)) for a in args], "--out", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.large
def test_cli_trains_with_yaml_and_flag_overrides(store: Path, tmp_path: Path, run_cli) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "model_options: {width: 8, depths: [1]}\nsize: 32\nepochs: 5\nbatch_size: 16\naugment: 0.0\n"
    )
    result = run_cli("train", "cnn", "--config", str(config), "--data", str(store), "--epochs", "1",
                     "--out", str(tmp_path / "run"), "--no-jit")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "val mAP" in result.stderr and "Device: CPU" in result.stderr
    assert "epochs: 1" in (tmp_path / "run" / "config.yaml").read_text()
    # Keras' epoch lines are messages too: standard output stays empty.
    assert result.stdout == "" and "val_map:" in result.stderr


# --- losses -----------------------------------------------------------------------------------------


def _asl_numpy(y: np.ndarray, z: np.ndarray, gamma_neg: float, gamma_pos: float, clip: float) -> np.ndarray:
    p = 1 / (1 + np.exp(-z))
    p_m = np.maximum(p - clip, 0) if clip > 0 else p
    loss = -y * (1 - p) ** gamma_pos * np.log(p) - (1 - y) * p_m**gamma_neg * np.log(1 - p_m)
    return loss.mean(axis=-1)


@pytest.mark.parametrize("gamma_neg, gamma_pos, clip", [(4.0, 0.0, 0.05), (2.0, 1.0, 0.2), (0.0, 0.0, 0.0)])
def test_asymmetric_loss_matches_the_paper_formula(gamma_neg: float, gamma_pos: float, clip: float) -> None:
    from yolol_tf.training.losses import get_loss

    rng = np.random.default_rng(0)
    y = (rng.random((6, 5)) < 0.3).astype(np.float32)
    z = rng.normal(0, 3, (6, 5)).astype(np.float32)
    loss = get_loss("asl", asl_gamma_neg=gamma_neg, asl_gamma_pos=gamma_pos, asl_clip=clip)
    per_sample = np.asarray(loss.call(y, z))
    np.testing.assert_allclose(per_sample, _asl_numpy(y, z, gamma_neg, gamma_pos, clip), rtol=1e-5, atol=1e-6)
    assert float(loss(y, z)) == pytest.approx(per_sample.mean(), rel=1e-5)


def test_asl_without_focusing_and_unit_weighted_bce_equal_bce() -> None:
    import keras

    from yolol_tf.training.losses import get_loss

    rng = np.random.default_rng(1)
    y = (rng.random((8, 4)) < 0.4).astype(np.float32)
    z = rng.normal(0, 2, (8, 4)).astype(np.float32)
    bce = float(keras.losses.BinaryCrossentropy(from_logits=True)(y, z))
    asl = float(get_loss("asl", asl_gamma_neg=0.0, asl_gamma_pos=0.0, asl_clip=0.0)(y, z))
    weighted = float(get_loss("weighted_bce", class_freq=[0.5] * 4)(y, z))
    assert asl == pytest.approx(bce, rel=1e-5)
    assert weighted == pytest.approx(bce, rel=1e-5)
    assert float(get_loss("bce")(y, z)) == pytest.approx(bce, rel=1e-6)


def test_weighted_bce_up_weights_rare_positives_and_losses_serialize() -> None:
    import keras

    from yolol_tf.training.losses import get_loss, pos_weights

    assert pos_weights([0.5, 0.1, 0.0]) == pytest.approx([1.0, 9.0, 1.0])
    y = np.array([[1.0, 0.0]], np.float32)
    z = np.array([[-1.0, -1.0]], np.float32)
    plain = float(get_loss("weighted_bce", class_freq=[0.5, 0.5])(y, z))
    rare = float(get_loss("weighted_bce", class_freq=[0.1, 0.5])(y, z))
    assert rare > plain, "a missed rare positive costs more"
    for loss in (get_loss("asl", asl_clip=0.1), get_loss("weighted_bce", class_freq=[0.2, 0.5])):
        again = keras.losses.deserialize(keras.losses.serialize(loss))
        assert float(again(y, z)) == pytest.approx(float(loss(y, z)))


def test_unknown_loss_is_a_user_error() -> None:
    from yolol_tf.training.losses import get_loss

    with pytest.raises(UserError, match="Unknown loss 'hinge'"):
        get_loss("hinge")


# --- device -----------------------------------------------------------------------------------------


def test_device_defaults_are_the_fastest_measured_and_flags_override(tmp_path: Path) -> None:
    from yolol_tf.device import Device, choose, cpu_features

    cpu, gpu, metal = Device("cpu", "CPU"), Device("cuda", "GPU"), Device("metal", "Apple")
    assert (choose(cpu).policy, choose(cpu).jit) == ("float32", False)
    assert (choose(gpu).policy, choose(gpu).jit) == ("mixed_float16", True)
    assert (choose(metal).policy, choose(metal).jit) == ("float32", False)
    assert choose(cpu, "bfloat16", True).policy == "mixed_bfloat16" and choose(cpu, "off", True).jit
    assert choose(gpu, "off", False).policy == "float32"
    with pytest.raises(UserError, match="mixed_precision"):
        choose(cpu, "float8")
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu avx2 avx512f amx_bf16 avx512_bf16\n")
    assert cpu_features(info) == ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    assert cpu_features(tmp_path / "missing") == ()


def test_class_frequency_for_weighted_bce_counts_training_positives(store: Path) -> None:
    from yolol_tf.data import open_data
    from yolol_tf.training import class_frequency

    source = open_data(str(store))
    labels = np.concatenate([y.numpy() for _, y in source.dataset("train", 32)])
    np.testing.assert_allclose(class_frequency(source, source.info), labels.mean(axis=0))


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parents[1] / "experiments").glob("*.yaml")), ids=lambda p: p.name
)
def test_experiment_files_are_valid_configs(path: Path) -> None:
    from yolol_tf import config as config_lib
    from yolol_tf.models import model_options
    from yolol_tf.training import TrainConfig, validate

    config = config_lib.resolve(TrainConfig, path, {})
    assert set(config.model_options) <= set(model_options(config.model)), "unknown model option"
    validate(dataclasses.replace(config, data=None))  # the 63-class file's data path is a placeholder


def test_a_second_training_into_a_run_folder_in_use_is_refused(
    store: Path, tmp_path: Path, tiny_train_config
) -> None:
    from yolol_tf.locks import exclusive
    from yolol_tf.training import train

    out = tmp_path / "run"
    with exclusive(out, what="training run"), pytest.raises(UserError, match="training run"):
        train(tiny_train_config(store, out))
    assert not out.exists(), "the refused run wrote into the folder"


def test_config_yaml_records_absolute_data_paths_so_export_works_from_another_folder(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_train_config
) -> None:
    import yaml

    from yolol_tf.inference.export import export
    from yolol_tf.training import train

    monkeypatch.chdir(store.parent)
    run = train(tiny_train_config(store.name, tmp_path / "run"), verbose=0)  # data given relative to the cwd
    assert yaml.safe_load((run / "config.yaml").read_text())["data"] == str(store.absolute())
    monkeypatch.chdir(tmp_path)
    assert export(run, "tflite", verbose=False).path.is_file()
