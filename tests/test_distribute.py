"""Distribution: strategy choice, TF_CONFIG, the custom loop against Model.fit, and real multi-worker runs.

Multi-worker tests start worker processes on 127.0.0.1 (TensorFlow only sets up collectives or logical
devices before it starts, so never in the test process itself).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests import helpers_distribute as helpers
from yolol_tf.errors import UserError
from yolol_tf.training import distribute


def _max_gap(a: list, b: list) -> float:
    return max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in zip(a, b, strict=True))


def test_workers_and_task_index_become_tf_config(monkeypatch: pytest.MonkeyPatch) -> None:
    config = distribute.tf_config_for("10.0.0.1:2222, node-b:2222", 1)
    assert config == {
        "cluster": {"worker": ["10.0.0.1:2222", "node-b:2222"]},
        "task": {"type": "worker", "index": 1},
    }
    assert distribute.read_tf_config(json.dumps(config)) == config
    # A Kubernetes indexed Job gives each pod its index.
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "0")
    assert distribute.tf_config_for(["a:1", "b:1"])["task"]["index"] == 0


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"cluster": {"worker": ["a:1"]}', "not valid JSON"),
        ('{"task": {"type": "worker", "index": 0}}', '"cluster"'),
        ('{"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}', "'a'"),
        ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}', "0..1"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', "'chief'"),
        ('{"cluster": {"workers": ["a:1"]}, "task": {"type": "workers", "index": 0}}', "'workers'"),
    ],
)
def test_malformed_tf_config_is_a_user_error(monkeypatch: pytest.MonkeyPatch, text: str, words: str) -> None:
    monkeypatch.setenv("TF_CONFIG", text)
    with pytest.raises(UserError, match=words.replace(".", r"\.")):
        distribute.make_strategy("auto")


def test_bad_workers_arguments_are_user_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    with pytest.raises(UserError, match="host:99999"):
        distribute.make_strategy("multi-worker", workers="host:99999,other:1", task_index=0)
    with pytest.raises(UserError, match="0..1"):
        distribute.make_strategy("multi-worker", workers="a:1,b:1", task_index=2)
    with pytest.raises(UserError, match="--task-index"):
        distribute.make_strategy("multi-worker", workers="a:1,b:1")
    with pytest.raises(UserError, match="TF_CONFIG"):
        distribute.make_strategy("multi-worker")
    with pytest.raises(UserError, match="Unknown strategy 'gpus'"):
        distribute.make_strategy("gpus")


def test_train_passes_workers_and_task_index_to_the_strategy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from yolol_tf.training import TrainConfig, train

    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    config = TrainConfig(model="cnn", data=str(tmp_path), strategy="multi-worker", out=str(tmp_path / "run"))
    with pytest.raises(UserError, match="0..1 for 2 workers. Received: 2"):
        train(config, workers="127.0.0.1:7001,127.0.0.1:7002", task_index=2)
    assert not (tmp_path / "run").exists()


def test_slurm_environment_becomes_tf_config() -> None:
    assert distribute.expand_hostlist("gpu[08-10,12],login1") == [
        "gpu08",
        "gpu09",
        "gpu10",
        "gpu12",
        "login1",
    ]
    env = {"SLURM_STEP_NODELIST": "gpu[1-2]", "SLURM_STEP_TASKS_PER_NODE": "2(x2)", "SLURM_PROCID": "3"}
    config = distribute.tf_config_from_slurm(env, port=7000)
    assert config["cluster"]["worker"] == ["gpu1:7000", "gpu1:7001", "gpu2:7000", "gpu2:7001"]
    assert config["task"] == {"type": "worker", "index": 3}
    # One task is no cluster.
    assert (
        distribute.tf_config_from_slurm(
            {"SLURM_JOB_NODELIST": "n1", "SLURM_TASKS_PER_NODE": "1", "SLURM_PROCID": "0"}
        )
        is None
    )


def test_auto_on_one_device_trains_with_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = distribute.make_strategy("auto")
    assert strategy.num_replicas_in_sync == 1
    assert distribute.is_chief(strategy)
    assert not distribute.needs_custom_loop(strategy)


def _cluster_member(task_type: str, task_id: int, cluster: dict):
    """A stand-in for a multi-worker strategy: only its cluster resolver."""
    import tensorflow as tf

    resolver = SimpleNamespace(
        task_type=task_type, task_id=task_id, cluster_spec=lambda: tf.train.ClusterSpec(cluster)
    )
    return SimpleNamespace(cluster_resolver=resolver)


def test_chief_is_the_chief_task_else_worker_zero() -> None:
    workers = {"worker": ["a:1", "b:1"]}
    assert distribute.is_chief(_cluster_member("worker", 0, workers))
    assert not distribute.is_chief(_cluster_member("worker", 1, workers))
    with_chief = {"chief": ["c:1"], **workers}
    assert distribute.is_chief(_cluster_member("chief", 0, with_chief))
    assert not distribute.is_chief(_cluster_member("worker", 0, with_chief))


def test_a_restarted_cluster_run_resumes_without_being_asked(tmp_path: Path) -> None:
    from yolol_tf.training.loop import should_resume

    chief = _cluster_member("worker", 0, {"worker": ["a:1", "b:1"]})
    other = _cluster_member("worker", 1, {"worker": ["a:1", "b:1"]})
    alone = SimpleNamespace(cluster_resolver=None)
    assert not should_resume(tmp_path, False, chief)  # a first start
    (tmp_path / "backup").mkdir()
    assert should_resume(tmp_path, False, chief)  # the same command, restarted by the cluster manager
    assert not should_resume(tmp_path, False, other)  # only the chief checks the run folder
    assert not should_resume(tmp_path, False, alone)  # one process still needs --resume
    assert should_resume(tmp_path, True, alone)


def test_workers_read_whole_files_only_when_there_are_enough() -> None:
    import tensorflow as tf

    policy = tf.data.experimental.AutoShardPolicy
    ds = tf.data.Dataset.range(8)
    two_workers = _cluster_member("worker", 0, {"worker": ["a:1", "b:1"]})
    assert distribute.num_workers(two_workers) == 2
    for files, expected in [(1, policy.DATA), (2, policy.FILE), (5, policy.FILE)]:
        sharded = distribute.shard_by_files(ds, two_workers, files)
        assert sharded.options().experimental_distribute.auto_shard_policy == expected


def test_custom_fit_matches_fit_and_drives_callbacks(tmp_path: Path) -> None:
    import keras
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    reference = helpers.train(strategy, 2, use_fit=True)
    csv = tmp_path / "history.csv"
    seen: list[str] = []
    spy = keras.callbacks.LambdaCallback(
        on_train_begin=lambda logs: seen.append("train_begin"),
        on_epoch_begin=lambda epoch, logs: seen.append(f"epoch_begin {epoch}"),
        on_train_batch_end=lambda batch, logs: seen.append(
            f"batch {batch} loss" if "loss" in logs else "batch"
        ),
        on_epoch_end=lambda epoch, logs: seen.append(f"epoch_end {epoch} {sorted(logs)}"),
        on_train_end=lambda logs: seen.append("train_end"),
    )
    ours = helpers.train(strategy, 2, callbacks=[keras.callbacks.CSVLogger(str(csv)), spy])

    assert (
        ours["history"].keys()
        == reference["history"].keys()
        == {"loss", "accuracy", "val_loss", "val_accuracy"}
    )
    for name, values in reference["history"].items():
        np.testing.assert_allclose(ours["history"][name], values, rtol=1e-6)
    assert _max_gap(ours["weights"], reference["weights"]) < 1e-6
    assert csv.read_text().splitlines()[0] == "epoch,accuracy,loss,val_accuracy,val_loss"
    assert seen[:3] == ["train_begin", "epoch_begin 0", "batch 0 loss"]
    assert "epoch_end 1 ['accuracy', 'loss', 'val_accuracy', 'val_loss']" in seen and seen[-1] == "train_end"


def test_custom_fit_resumes_after_an_interruption(tmp_path: Path) -> None:
    import keras
    import tensorflow as tf

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            if epoch == 2:
                raise KeyboardInterrupt

    strategy = tf.distribute.get_strategy()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(KeyboardInterrupt):
        helpers.train(strategy, 4, callbacks=[backup, Interrupt()])
    assert (tmp_path / "backup" / "checkpoint").is_file()
    resumed = helpers.train(
        strategy, 4, callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))]
    )
    reference = helpers.train(strategy, 4)

    assert len(resumed["history"]["loss"]) == 2  # epochs 2 and 3 only
    np.testing.assert_allclose(resumed["history"]["loss"], reference["history"]["loss"][2:], rtol=1e-5)
    assert _max_gap(resumed["weights"], reference["weights"]) < 1e-5
    assert not (tmp_path / "backup").exists()  # a finished run leaves no backup


@pytest.mark.large
def test_two_workers_train_like_one_process(tmp_path: Path) -> None:
    import tensorflow as tf

    processes = helpers.start_workers(tmp_path, 2)
    try:
        codes = helpers.wait_all(processes, timeout=240)
    finally:
        helpers.kill_all(processes)
    assert codes == [0, 0], helpers.logs(tmp_path)
    chief, other = (json.loads((tmp_path / f"result-{i}.json").read_text()) for i in range(2))
    assert (chief["chief"], other["chief"]) == (True, False)
    assert _max_gap(chief["weights"], other["weights"]) == 0.0
    # Only the chief writes the run folder's files.
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 3

    single = helpers.train(tf.distribute.get_strategy(), 2)
    np.testing.assert_allclose(chief["history"]["loss"], single["history"]["loss"], rtol=1e-5)
    np.testing.assert_allclose(chief["history"]["val_loss"], single["history"]["val_loss"], rtol=1e-5)
    assert _max_gap(chief["weights"], single["weights"]) < 1e-4


@pytest.mark.large
def test_mirrored_on_two_devices_trains_like_one(tmp_path: Path) -> None:
    process = helpers.start("mirrored", tmp_path)
    try:
        codes = helpers.wait_all([process], timeout=180)
    finally:
        helpers.kill_all([process])
    assert codes == [0], helpers.logs(tmp_path)
    result = json.loads((tmp_path / "result-mirrored.json").read_text())
    assert result["replicas"] == 2 and not result["needs_custom_loop"]
    one = result["one_device"]
    for run in ("fit", "custom_fit"):
        np.testing.assert_allclose(result[run]["history"]["loss"], one["history"]["loss"], rtol=1e-5)
        assert _max_gap(result[run]["weights"], one["weights"]) < 1e-4
    # The validation mAP sees each sample once, not once per replica.
    predict = result["predict"]
    assert predict["rows"] == 64 and predict["truth_gap"] == 0.0 and predict["gap"] < 1e-6


@pytest.mark.large
def test_killed_worker_restarts_and_the_run_completes(tmp_path: Path) -> None:
    import tensorflow as tf

    # Worker 1 dies at the start of epoch 1; its partner's collectives then fail, and both are restarted.
    codes = helpers.run_with_restarts(
        tmp_path, 2, ["--epochs", "3", "--backup"], {1: ["--die-at-epoch", "1"]}, timeout=300
    )
    assert codes == [0, 0], helpers.logs(tmp_path)
    chief, other = (json.loads((tmp_path / f"result-{i}.json").read_text()) for i in range(2))
    assert len(chief["history"]["loss"]) == 2  # resumed after epoch 0
    assert _max_gap(chief["weights"], other["weights"]) == 0.0
    epochs = [line.split(",")[0] for line in (tmp_path / "history.csv").read_text().splitlines()[1:]]
    assert epochs == ["0", "1", "2"]
    assert not (tmp_path / "backup").exists()

    single = helpers.train(tf.distribute.get_strategy(), 3)
    assert _max_gap(chief["weights"], single["weights"]) < 1e-4


@pytest.mark.large
def test_two_workers_run_yolol_tf_train_and_only_the_chief_writes(tmp_path: Path) -> None:
    from tests.helpers_pipeline import random_store

    # 4 train shard files: each of the 2 workers reads its own 2.
    store = random_store(tmp_path / "store", counts={"train": 32, "val": 16}, size=32, num_classes=3)
    settings = tmp_path / "tiny.yaml"
    settings.write_text(
        "model_options: {width: 8, depths: [1]}\nbatch_size: 8\naugment: 0.0\npatience: 0\n"
        "mixed_precision: 'off'\njit: false\n"
    )
    run = tmp_path / "shared" / "run"
    args = [
        "cnn",
        "--config",
        str(settings),
        "--data",
        str(store),
        "--size",
        "32",
        "--epochs",
        "2",
        "--steps-per-epoch",
        "2",
        "--strategy",
        "multi-worker",
        "--out",
        str(run),
    ]
    processes = helpers.start_train_cli(tmp_path, 2, args)
    try:
        codes = helpers.wait_all(processes, timeout=240)
    finally:
        helpers.kill_all(processes)
    assert codes == [0, 0], helpers.logs(tmp_path)

    assert sorted(p.name for p in run.iterdir()) == [
        "best.json", "best.keras", "config.yaml", "history.csv", "labels.json", "last.keras", "logs",
        "metrics.json", "plots",
    ]  # fmt: skip
    assert [line.split(",")[0] for line in (run / "history.csv").read_text().splitlines()[1:]] == ["0", "1"]
    assert "val" in json.loads((run / "metrics.json").read_text())
    # The other worker wrote nothing anywhere: no run folder, cache or leftover scratch files.
    assert helpers.files_under(tmp_path / "worker-1") == []
