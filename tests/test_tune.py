"""The hyperparameter search: outputs, resume, failed trials, space files, and a chief with two workers."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.support.processes import free_ports, kill_all, start_python
from yolol_tf.errors import UserError
from yolol_tf.tuning.space import COMMON, load_space, model_space, space_table, train_values


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, make_store) -> Path:
    """48 train and 24 val "centre" crops of 32 px, 3 classes: a tiny cnn learns something in one epoch."""
    return make_store(tmp_path_factory.mktemp("store"), counts={"train": 48, "val": 24})


@pytest.fixture(scope="module")
def source(store: Path):
    """The store, opened: what ``tune(config, source=...)`` takes."""
    from yolol_tf.data import open_data

    return open_data(store)


@pytest.fixture
def count_builds(monkeypatch: pytest.MonkeyPatch) -> list:
    """Counts model builds (one per trial run); the list holds each build's options."""
    import yolol_tf.models as models

    real = models.build_model
    calls: list = []

    def counting(name, input_shape, num_classes, **options):
        calls.append(options)
        return real(name, input_shape, num_classes, **options)

    monkeypatch.setattr(models, "build_model", counting)
    return calls


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, tiny_tune_config, source) -> Path:
    """A finished 2-trial random search of a tiny cnn."""
    from yolol_tf.tuning.search import tune

    out = tmp_path_factory.mktemp("tune") / "search"
    return tune(tiny_tune_config(out), source=source)


def test_search_writes_trials_table_plot_and_best_yaml(searched: Path) -> None:
    from yolol_tf.config import resolve
    from yolol_tf.models import build_model
    from yolol_tf.training import TrainConfig

    trials = pd.read_csv(searched / "trials.csv")
    columns = ("trial_id", "status", "worker", "learning_rate", "width", "depths", "dropout", "loss",
               "augment", "batch_size", "score", "epochs", "seconds", "peak_memory_mb", "error")  # fmt: skip
    for column in columns:
        assert column in trials.columns, column
    assert list(trials["status"]) == ["COMPLETED", "COMPLETED"]
    assert (
        (trials["epochs"] == 1).all()
        and (trials["seconds"] > 0).all()
        and (trials["peak_memory_mb"] > 0).all()
    )
    assert trials["score"].between(0, 1).all()
    # The space file fixed or narrowed these.
    assert (
        set(trials["width"]) <= {4, 8}
        and set(trials["depths"]) == {"1-1"}
        and set(trials["batch_size"]) == {16}
    )
    assert (searched / "trials.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (searched / "keras_tuner" / "oracle.json").is_file()

    best = resolve(TrainConfig, searched / "best.yaml", {})
    # The objective is maximised: best.yaml is the highest-scoring trial.
    top = trials.loc[trials["score"].idxmax()]
    assert best.model == "cnn" and best.size == 32 and best.batch_size == 16
    assert best.learning_rate == pytest.approx(top["learning_rate"])
    assert best.model_options["width"] == top["width"] and best.model_options["depths"] == [1, 1]
    assert build_model(best.model, (32, 32, 3), 3, **best.model_options).output_shape == (None, 3)
    # The trials' network options whose default changed are written out, in best.yaml and search.yaml.
    assert best.model_options["pool_shortcut"] is True
    assert yaml.safe_load((searched / "search.yaml").read_text())["network"] == {"pool_shortcut": True}


def test_rerun_continues_and_never_reruns_finished_trials(
    searched: Path, count_builds: list, tiny_tune_config, source
) -> None:
    from yolol_tf.tuning.search import tune

    before = pd.read_csv(searched / "trials.csv")
    tune(tiny_tune_config(str(searched)), source=source)
    assert count_builds == []
    tune(tiny_tune_config(str(searched), max_trials=3), source=source)
    assert len(count_builds) == 1
    after = pd.read_csv(searched / "trials.csv")
    assert len(after) == 3 and list(after["status"]) == ["COMPLETED"] * 3
    pd.testing.assert_frame_equal(after.iloc[:2][before.columns], before, check_dtype=False)


def test_a_changed_search_is_refused_and_overwrite_starts_afresh(
    searched: Path, tmp_path: Path, count_builds: list, tiny_tune_config, source
) -> None:
    from yolol_tf.tuning.search import tune

    with pytest.raises(UserError, match="different search.*epochs"):
        tune(tiny_tune_config(str(searched), epochs=2), source=source)
    assert count_builds == []
    out = tmp_path / "fresh"
    tune(tiny_tune_config(str(out), max_trials=1), source=source)
    # A search started before the cnn's pool_shortcut existed built other networks: it is not continued.
    recorded = yaml.safe_load((out / "search.yaml").read_text())
    del recorded["network"]
    (out / "search.yaml").write_text(yaml.safe_dump(recorded))
    with pytest.raises(UserError, match="different search.*network"):
        tune(tiny_tune_config(str(out), max_trials=2), source=source)
    tune(tiny_tune_config(str(out), max_trials=1, overwrite=True), source=source)
    assert len(count_builds) == 2
    assert len(pd.read_csv(out / "trials.csv")) == 1


def test_a_crashing_trial_is_recorded_failed_and_the_search_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_tune_config, source
) -> None:
    import yolol_tf.models as models
    from yolol_tf.tuning.search import tune

    real, calls = models.build_model, []

    def first_crashes(*args, **options):
        calls.append(options)
        if len(calls) == 1:
            raise MemoryError("simulated out of memory")
        return real(*args, **options)

    monkeypatch.setattr(models, "build_model", first_crashes)
    out = tune(tiny_tune_config(str(tmp_path / "s")), source=source)
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["status"]) == ["FAILED", "COMPLETED"]
    assert "simulated out of memory" in trials["error"][0]
    assert trials["seconds"][0] > 0 and pd.isna(trials["score"][0])
    assert (out / "best.yaml").is_file()


def test_the_search_stops_after_failures_in_a_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_tune_config, source
) -> None:
    import yolol_tf.models as models
    from yolol_tf.tuning.search import tune

    def always_crashes(*args, **options):
        raise ValueError("bad hyperparameters")

    monkeypatch.setattr(models, "build_model", always_crashes)
    with pytest.raises(UserError, match="last 2 trials failed") as error:
        tune(tiny_tune_config(str(tmp_path / "s"), max_trials=5, max_failures=2), source=source)
    assert error.value.exit_code == 1
    trials = pd.read_csv(tmp_path / "s" / "trials.csv")
    assert list(trials["status"]) == ["FAILED", "FAILED"]
    assert not (tmp_path / "s" / "best.yaml").exists()


def test_space_file_narrows_fixes_and_names_unknown_parameters(tmp_path: Path) -> None:
    space_file = tmp_path / "space.yaml"
    space_file.write_text("learning_rate: {min: 1e-4, max: 1e-2}\nloss: [bce, asl]\ndropout: 0.2\n")
    space = {p.name: p for p in load_space("cnn", space_file)}
    assert (space["learning_rate"].low, space["learning_rate"].high, space["learning_rate"].log) == (
        1e-4,
        1e-2,
        True,
    )
    assert space["loss"].values == ("bce", "asl") and space["dropout"].kind == "fixed"
    assert space["dropout"].values == (0.2,)
    assert load_space("cnn", None, fixed={"batch_size": 48})[-1].values == (48,)

    space_file.write_text("dropuot: 0.2\nwidht: 8\n")
    with pytest.raises(UserError, match=r"space.yaml: unknown search parameter\(s\) dropuot, widht for cnn"):
        load_space("cnn", space_file)
    space_file.write_text("loss: [bce, hinge]\n")
    with pytest.raises(UserError, match="loss='hinge' is not one of"):
        load_space("cnn", space_file)
    space_file.write_text("learning_rate: {min: 0.1, max: 0.01}\n")
    with pytest.raises(UserError, match="needs min < max"):
        load_space("cnn", space_file)


def test_sampled_values_become_train_settings() -> None:
    values = {"learning_rate": 0.003, "width_scale": 0.5, "depth": 3, "dropout": 0.1, "batch_norm": True,
              "loss": "asl", "asl_gamma_neg": 4.0, "asl_gamma_pos": 0.5, "focal_gamma": None, "augment": 0.25,
              "batch_size": 64, "tuner/epochs": 2}  # fmt: skip
    settings = train_values("dense", values)
    assert settings["model_options"] == {"dropout": 0.1, "widths": [256, 128, 64], "batch_norm": True}
    assert settings["loss"] == "asl" and settings["asl_gamma_neg"] == 4.0 and "focal_gamma" not in settings
    assert "tuner/epochs" not in settings and settings["batch_size"] == 64


def test_sampled_values_become_each_models_options() -> None:
    cnn = train_values("cnn", {"width": 16, "depths": "2-3-3", "dropout": 0.30000000000000004, "loss": "bce"})
    assert cnn["model_options"] == {"dropout": 0.3, "width": 16, "depths": [2, 3, 3]} and cnn["loss"] == "bce"
    resnet = train_values("resnet50", {"small_input": 1, "batch_size": 16.0, "augment": 0})
    assert resnet["model_options"] == {"small_input": True} and resnet["batch_size"] == 16
    assert train_values("dense", {})["model_options"] == {"widths": [2048, 1024, 512, 256, 128]}


def test_spaces_are_learning_rate_model_parameters_common_ones_and_batch_size() -> None:
    from yolol_tf.models import get_spec

    common = ["loss", "focal_gamma", "asl_gamma_neg", "asl_gamma_pos", "augment"]
    own = {
        "dense": ["width_scale", "depth", "dropout", "batch_norm"],
        "cnn": ["width", "depths", "dropout"],
        "resnet50": ["dropout", "small_input"],
    }
    for model, names in own.items():
        # The columns of trials.csv, in this order.
        assert [p.name for p in model_space(model)] == ["learning_rate", *names, *common, "batch_size"]
        assert model_space(model)[1:-1] == (*get_spec(model).space, *COMMON)
    assert space_table("resnet50").splitlines()[:3] == [
        "learning_rate  3e-05 .. 0.003 log  peak learning rate",
        "dropout        0 .. 0.5 step 0.1   dropout before the logits",
        "small_input    False | True        no stem downsampling",
    ]
    assert space_table("dense").splitlines()[1].split("  ")[-1] == "scales the widths 2048..128"
    assert model_space("cnn")[-1].values == (32, 64, 128) and model_space("resnet50")[-1].values == (
        16,
        32,
        64,
    )


def test_tune_config_is_data_settings_and_the_search_module_exports_its_entry_points() -> None:
    from yolol_tf.data.settings import DataSettings
    from yolol_tf.tuning import TuneConfig as exported
    from yolol_tf.tuning.search import TuneConfig, child_main, tune

    assert exported is TuneConfig and isinstance(TuneConfig(), DataSettings) and TuneConfig().size is None
    assert callable(child_main) and callable(tune)
    with pytest.raises(UserError, match="--size must be an integer in 8..1024. Received: size=4"):
        tune(TuneConfig(size=4))


def test_help_shows_every_search_space() -> None:
    from typer.testing import CliRunner

    from yolol_tf.cli import app

    result = CliRunner().invoke(app, ["tune", "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    for model in ("dense", "cnn", "resnet50"):
        assert f"{model}:" in result.output
        for line in space_table(model).splitlines()[:2]:
            assert line.split()[0] in result.output
    assert "small_input" in result.output and "asl_gamma_neg" in result.output


def test_cli_names_a_bad_space_file_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from yolol_tf.cli import main

    bad = tmp_path / "space.yaml"
    bad.write_text("dropout: 0.2\nlearning_rat: 0.1\n")
    assert main(["tune", "cnn", "--space", str(bad), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "learning_rat" in err and str(bad) in err and "Traceback" not in err


@pytest.mark.large
def test_a_chief_and_two_workers_run_every_trial_once(tmp_path: Path, store: Path) -> None:
    import json

    out = tmp_path / "search"
    address = f"127.0.0.1:{free_ports(1)[0]}"
    command = ["-m", "tests.support.tune_worker", "--out", str(out), "--data", str(store),
               "--max-trials", "3"]  # fmt: skip
    roles = [
        ["--chief", address],
        ["--worker", address, "--worker-id", "w1"],
        ["--worker", address, "--worker-id", "w2"],
    ]
    logs = [open(tmp_path / f"{i}.log", "w") for i in range(3)]  # noqa: SIM115 (closed below)
    procs = [
        start_python(*command, *role, stdout=log, stderr=subprocess.STDOUT)
        for role, log in zip(roles, logs, strict=True)
    ]
    try:
        deadline = time.monotonic() + 150
        # Stop early if any process fails: the others would wait for it.
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            if any(p.returncode not in (None, 0) for p in procs):
                break
            time.sleep(0.5)
    finally:
        kill_all(procs)
        for log in logs:
            log.close()
    output = "\n".join((tmp_path / f"{i}.log").read_text() for i in range(3))
    assert [p.returncode for p in procs] == [0, 0, 0], output[-3000:]

    trials = pd.read_csv(out / "trials.csv")
    assert sorted(trials["trial_id"]) == [0, 1, 2] and (trials["status"] == "COMPLETED").all(), trials
    assert trials["score"].notna().all() and set(trials["worker"]) <= {"w1", "w2"}
    # Each trial ran once: one stats file, one worker, and the chief's oracle holds every result.
    for trial_dir in sorted((out / "keras_tuner").glob("trial_*")):
        state = json.loads((trial_dir / "trial.json").read_text())
        assert state["status"] == "COMPLETED" and state["score"] is not None
    assert len(list((out / "keras_tuner").glob("trial_*/stats.json"))) == 3
    assert (out / "best.yaml").is_file()


def test_cli_searches_a_store_and_trains_the_best(
    tmp_path: Path, capsys: pytest.CaptureFixture, store: Path, cli
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("width: 4\ndepths: [1-1]\nloss: bce\n")
    out = tmp_path / "search"
    args = ["tune", "cnn", "--data", str(store), "--max-trials", "1", "--epochs", "1", "--space", str(space),
            "--batch-size", "16", "--out", str(out), "--train-best", "--train-epochs", "1"]  # fmt: skip
    assert cli(*args) == 0
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["status"]) == ["COMPLETED"] and trials["width"][0] == 4
    assert (out / "best" / "best.keras").is_file() and (out / "best" / "metrics.json").is_file()
    assert "best val_map" in capsys.readouterr().err
    # The best configuration trains with the model's own defaults under best.yaml, as `train` does.
    import yaml

    from yolol_tf.training.config import model_defaults

    trained = yaml.safe_load((out / "best" / "config.yaml").read_text())
    assert trained["label_smoothing"] == model_defaults("cnn")["label_smoothing"] and trained["epochs"] == 1


@pytest.mark.large
def test_trials_per_process_runs_each_trial_in_a_fresh_process(
    tmp_path: Path, store: Path, tiny_tune_config
) -> None:
    from yolol_tf.tuning.search import tune

    out = tune(tiny_tune_config(tmp_path / "s", data=str(store), trials_per_process=1))
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["status"]) == ["COMPLETED", "COMPLETED"]
    assert trials["pid"].nunique() == 2 and os.getpid() not in set(trials["pid"])
    assert (out / "best.yaml").is_file()


def test_a_worker_with_no_chief_to_answer_gives_up_with_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from yolol_tf import cli
    from yolol_tf.tuning import cluster

    monkeypatch.setattr(cluster, "CHIEF_TIMEOUT", 2.0)  # keras-tuner alone would wait an hour
    with socket.socket() as probe:  # a free port nothing listens on: the chief has finished and gone
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = cli.main(["tune", "cnn", "--out", str(tmp_path / "search"), "--worker", f"127.0.0.1:{port}"])
    assert code == 1
    assert f"no chief answers at 127.0.0.1:{port}" in capsys.readouterr().err


def test_addresses_are_parsed_by_one_rule_for_training_and_tuning() -> None:
    from yolol_tf.addresses import parse_address
    from yolol_tf.training.distribute import tf_config_for
    from yolol_tf.tuning.cluster import role_of
    from yolol_tf.tuning.config import TuneConfig

    assert parse_address("[::1]:8000", "--chief") == ("::1", 8000)
    assert parse_address("gpu-1.local:2222", "--workers") == ("gpu-1.local", 2222)
    for bad in ("gpu1", "gpu1:0", "gpu1:70000", ":80", "a b:1"):
        with pytest.raises(UserError, match=r"HOST:PORT with a port in 1..65535"):
            role_of(TuneConfig(worker=bad))
        with pytest.raises(UserError, match=r"HOST:PORT with a port in 1..65535"):
            tf_config_for(f"a:1,{bad}", 0)


def test_the_example_space_file_in_assets_is_a_valid_space() -> None:
    space = {p.name: p for p in load_space("cnn", Path(__file__).parents[1] / "assets" / "space-cnn.yaml")}
    assert space["dropout"].kind == "fixed" and space["loss"].values == ("bce", "asl")
