"""Distribution: strategy choice, TF_CONFIG, the custom loop against Model.fit, and real multi-worker runs.

Multi-worker tests start worker processes on 127.0.0.1 (TensorFlow only sets up collectives or logical
devices before it starts, so never in the test process itself).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.support import distribute_worker as worker
from tests.support.processes import CLI, free_ports, kill_all, python_env, read_logs, start_python, wait_all
from yolol_tf.errors import UserError
from yolol_tf.training import distribute

WORKER = "tests.support.distribute_worker"


def _start(mode: str, out: Path, *args: str) -> subprocess.Popen:
    """Starts ``python -m tests.support.distribute_worker MODE --out OUT ARGS``; output goes to OUT/log-*.txt."""
    name = "-".join([mode, *[a for a in args if a.isdigit()]])
    log = open(out / f"log-{name}-{time.monotonic_ns()}.txt", "w")  # noqa: SIM115 (the child holds it)
    return start_python("-m", WORKER, mode, "--out", str(out), *args, stdout=log, stderr=subprocess.STDOUT)


def _start_workers(out: Path, count: int = 2, *args: str) -> list[subprocess.Popen]:
    """Starts ``count`` workers on 127.0.0.1 training together."""
    workers = ",".join(f"127.0.0.1:{p}" for p in free_ports(count))
    return [_start("worker", out, "--workers", workers, "--task-index", str(i), *args) for i in range(count)]


def _run_with_restarts(
    out: Path, count: int, args: list[str], first_args: dict[int, list[str]], timeout: float
) -> list[int | None]:
    """Runs ``count`` workers, restarting each one that fails once (as a cluster manager would).

    Args:
        out: the workers' folder.
        count: number of workers.
        args: arguments of every worker.
        first_args: extra arguments of a worker's first start, by task index.
        timeout: seconds for the whole run.

    Returns:
        The final exit codes (None: still running at the timeout, then killed).
    """
    workers = ",".join(f"127.0.0.1:{p}" for p in free_ports(count))

    def launch(index: int, extra: list[str]) -> subprocess.Popen:
        return _start("worker", out, "--workers", workers, "--task-index", str(index), *args, *extra)

    processes = [launch(i, first_args.get(i, [])) for i in range(count)]
    restarted = [False] * count
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            codes = [p.poll() for p in processes]
            if all(code == 0 for code in codes):
                break
            for i, code in enumerate(codes):
                if code not in (None, 0) and not restarted[i]:
                    processes[i], restarted[i] = launch(i, []), True
            time.sleep(0.2)
        return [p.poll() for p in processes]
    finally:
        kill_all(processes)


def _start_train_cli(root: Path, count: int, args: list[str]) -> list[subprocess.Popen]:
    """Starts ``count`` workers of ``yolol-tf train ARGS --workers ... --task-index i`` on 127.0.0.1.

    Worker ``i`` runs in ``root/worker-i`` (its working directory, HOME, TMPDIR and yolol-tf cache), so a
    test sees anything it writes outside the run folder; its output goes to ``root/log-train-i.txt``.
    """
    workers = ",".join(f"127.0.0.1:{p}" for p in free_ports(count))
    processes = []
    for i in range(count):
        home = root / f"worker-{i}"
        for folder in ("home", "tmp", "cache"):
            (home / folder).mkdir(parents=True, exist_ok=True)
        # `import keras` itself writes keras.json and Matplotlib's font cache in every process: not ours.
        library_cache = root / "library-cache"
        env = python_env(
            HOME=str(home / "home"),
            TMPDIR=str(home / "tmp"),
            YOLOL_TF_CACHE=str(home / "cache"),
            KERAS_HOME=str(library_cache / "keras"),
            MPLCONFIGDIR=str(library_cache / "matplotlib"),
        )
        log = open(root / f"log-train-{i}.txt", "w")  # noqa: SIM115 (the child holds it)
        argv = ["-c", CLI, "train", *args, "--workers", workers, "--task-index", str(i)]
        processes.append(start_python(*argv, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT))
    return processes


def _files_under(folder: Path) -> list[str]:
    """Paths of the files below ``folder``, relative to it (empty folders do not count)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


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
    hosts = ["gpu08", "gpu09", "gpu10", "gpu12", "login1"]
    assert distribute.expand_hostlist("gpu[08-10,12],login1") == hosts
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
    reference = worker.train(strategy, 2, use_fit=True)
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
    ours = worker.train(strategy, 2, callbacks=[keras.callbacks.CSVLogger(str(csv)), spy])

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
        worker.train(strategy, 4, callbacks=[backup, Interrupt()])
    assert (tmp_path / "backup" / "checkpoint").is_file()
    resumed = worker.train(
        strategy, 4, callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))]
    )
    reference = worker.train(strategy, 4)

    assert len(resumed["history"]["loss"]) == 2  # epochs 2 and 3 only
    np.testing.assert_allclose(resumed["history"]["loss"], reference["history"]["loss"][2:], rtol=1e-5)
    assert _max_gap(resumed["weights"], reference["weights"]) < 1e-5
    assert not (tmp_path / "backup").exists()  # a finished run leaves no backup


@pytest.mark.large
def test_two_workers_train_like_one_process(tmp_path: Path) -> None:
    import tensorflow as tf

    processes = _start_workers(tmp_path, 2)
    try:
        codes = wait_all(processes, timeout=240)
    finally:
        kill_all(processes)
    assert codes == [0, 0], read_logs(tmp_path)
    chief, other = (json.loads((tmp_path / f"result-{i}.json").read_text()) for i in range(2))
    assert (chief["chief"], other["chief"]) == (True, False)
    assert _max_gap(chief["weights"], other["weights"]) == 0.0
    # Only the chief writes the run folder's files.
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 3

    single = worker.train(tf.distribute.get_strategy(), 2)
    np.testing.assert_allclose(chief["history"]["loss"], single["history"]["loss"], rtol=1e-5)
    np.testing.assert_allclose(chief["history"]["val_loss"], single["history"]["val_loss"], rtol=1e-5)
    assert _max_gap(chief["weights"], single["weights"]) < 1e-4


@pytest.mark.large
def test_mirrored_on_two_devices_trains_like_one(tmp_path: Path) -> None:
    process = _start("mirrored", tmp_path)
    try:
        codes = wait_all([process], timeout=180)
    finally:
        kill_all([process])
    assert codes == [0], read_logs(tmp_path)
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
    codes = _run_with_restarts(
        tmp_path, 2, ["--epochs", "3", "--backup"], {1: ["--die-at-epoch", "1"]}, timeout=300
    )
    assert codes == [0, 0], read_logs(tmp_path)
    chief, other = (json.loads((tmp_path / f"result-{i}.json").read_text()) for i in range(2))
    assert len(chief["history"]["loss"]) == 2  # resumed after epoch 0
    assert _max_gap(chief["weights"], other["weights"]) == 0.0
    epochs = [line.split(",")[0] for line in (tmp_path / "history.csv").read_text().splitlines()[1:]]
    assert epochs == ["0", "1", "2"]
    assert not (tmp_path / "backup").exists()

    single = worker.train(tf.distribute.get_strategy(), 3)
    assert _max_gap(chief["weights"], single["weights"]) < 1e-4


@pytest.mark.large
def test_two_workers_run_yolol_tf_train_and_only_the_chief_writes(tmp_path: Path, make_store) -> None:
    # 4 train shard files: each of the 2 workers reads its own 2.
    store = make_store(
        tmp_path / "store", pattern="random", counts={"train": 32, "val": 16}, size=32, records_per_shard=8
    )
    settings = tmp_path / "tiny.yaml"
    settings.write_text(
        "model_options: {width: 8, depths: [1]}\nbatch_size: 8\naugment: 0.0\npatience: 0\n"
        "mixed_precision: 'off'\njit: false\n"
    )
    run = tmp_path / "shared" / "run"
    args = ["cnn", "--config", str(settings), "--data", str(store), "--size", "32", "--epochs", "2",
            "--steps-per-epoch", "2", "--strategy", "multi-worker", "--out", str(run)]  # fmt: skip
    processes = _start_train_cli(tmp_path, 2, args)
    try:
        codes = wait_all(processes, timeout=240)
    finally:
        kill_all(processes)
    assert codes == [0, 0], read_logs(tmp_path)

    assert sorted(p.name for p in run.iterdir()) == [
        "best.json", "best.keras", "config.yaml", "history.csv", "labels.json", "last.keras", "logs",
        "metrics.json", "plots",
    ]  # fmt: skip
    assert [line.split(",")[0] for line in (run / "history.csv").read_text().splitlines()[1:]] == ["0", "1"]
    assert "val" in json.loads((run / "metrics.json").read_text())
    # The other worker wrote nothing anywhere: no run folder, cache or leftover scratch files.
    assert _files_under(tmp_path / "worker-1") == []
