"""One operation at a time on a path: a held lock refuses others, is released however its holder ends, and a
stale one is taken over by exactly one process.

Other processes are real (spawned) and synchronised through pipes, never through sleeps.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from yolol_tf import locks
from yolol_tf.errors import UserError
from yolol_tf.locks import exclusive, lock_path

_SPAWN = multiprocessing.get_context("spawn")  # no fork: the test process may hold TensorFlow's threads


def _hold(path: str, conn) -> None:
    """Child: holds the lock, says so, and releases it when told."""
    with exclusive(path, what="training run", command="yolol-tf train --out run"):
        conn.send("held")
        conn.recv()
    conn.send("released")


def _race(path: str, conn) -> None:
    """Child: waits for the start signal, tries the lock, reports, and holds a won lock until told."""
    conn.send("ready")
    conn.recv()
    try:
        with exclusive(path, what="export"):
            conn.send("won")
            conn.recv()
    except UserError as e:
        conn.send(f"refused: {e.message}")


def _start(target, path: Path):
    parent, child = _SPAWN.Pipe()
    process = _SPAWN.Process(target=target, args=(str(path), child))
    process.start()
    return process, parent


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped), so no process has it."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


def _write_lock(path: Path, **fields) -> Path:
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    record = {"pid": _dead_pid(), "host": socket.gethostname(), "started": "2024-01-01T00:00:00+00:00",
              "command": "yolol-tf train", **fields}  # fmt: skip
    lock.write_text(json.dumps(record))
    return lock


def test_the_lock_is_a_hidden_sibling_of_the_path_that_may_not_exist_yet(tmp_path):
    run = tmp_path / "runs" / "a"
    with exclusive(run) as lock:
        assert lock == tmp_path / "runs" / ".a.lock" == lock_path(tmp_path / "runs" / "." / "a")
        record = json.loads(lock.read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        assert record["started"] and record["command"]
        assert not run.exists()  # the operation, not the lock, creates it
    assert not lock.exists()


def test_a_held_lock_refuses_a_second_process_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    holder, conn = _start(_hold, run)
    try:
        assert conn.recv() == "held"
        with pytest.raises(UserError) as e:
            with exclusive(run, what="training run"):
                pytest.fail("a second holder got the lock")
        message = e.value.message
        assert str(run) in message and "another training run" in message
        assert (
            f"pid {holder.pid} on {socket.gethostname()}" in message and "yolol-tf train --out run" in message
        )
        assert json.loads(lock_path(run).read_text())["started"] in message
        assert "Wait for it to finish" in message and str(lock_path(run)) in message
        conn.send("release")
        assert conn.recv() == "released"
    finally:
        holder.join(30)
    assert holder.exitcode == 0
    with exclusive(run):  # free again
        pass


def test_this_process_cannot_take_a_lock_it_holds(tmp_path):
    with exclusive(tmp_path / "store", what="prepare"):
        with pytest.raises(UserError, match="already in use by this process"):
            with exclusive(tmp_path / "store", what="prepare"):
                pass
        assert lock_path(tmp_path / "store").exists()  # the refusal did not release the outer lock
    assert not lock_path(tmp_path / "store").exists()


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_the_lock_is_released_when_the_operation_fails_or_is_interrupted(tmp_path, error):
    with pytest.raises(error):
        with exclusive(tmp_path / "model.tflite", what="export"):
            raise error()
    assert not lock_path(tmp_path / "model.tflite").exists()
    with exclusive(tmp_path / "model.tflite"):
        pass


def test_a_lock_replaced_by_someone_else_is_not_deleted_on_release(tmp_path):
    with exclusive(tmp_path / "run") as lock:
        lock.write_text('{"pid": 1, "host": "other"}')  # a person forced it over to another run
    assert lock.read_text() == '{"pid": 1, "host": "other"}'


def test_a_stale_lock_of_a_dead_process_is_reported_and_taken_over(tmp_path, capfd):
    lock = _write_lock(tmp_path / "run")
    dead = json.loads(lock.read_text())["pid"]
    with exclusive(tmp_path / "run"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 1 and str(lock) in err[0]
    assert f"stale lock of pid {dead}" in err[0] and "no longer running" in err[0]
    assert not lock.exists() and list(tmp_path.iterdir()) == []  # no takeover file left behind


def test_a_lock_left_by_an_earlier_process_with_this_pid_is_stale(tmp_path, capfd):
    _write_lock(tmp_path / "run", pid=os.getpid())  # a restarted container's process gets the same pid
    with exclusive(tmp_path / "run"):
        pass
    assert "is this process, which does not hold it" in capfd.readouterr().err


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process start times come from /proc")
def test_a_lock_whose_pid_now_belongs_to_another_process_is_stale(tmp_path, capfd):
    _write_lock(
        tmp_path / "run", pid=os.getppid(), proc_start="1"
    )  # the parent is alive, but not since tick 1
    with exclusive(tmp_path / "run"):
        pass
    assert f"pid {os.getppid()} is now another process" in capfd.readouterr().err


def test_an_empty_lock_file_is_stale_only_once_it_is_old(tmp_path, monkeypatch, capfd):
    lock = lock_path(tmp_path / "run")
    lock.write_text("")
    os.utime(lock, (0, 0))  # written long ago: its writer died between creating and filling it
    with exclusive(tmp_path / "run"):
        pass
    assert "the lock file is empty" in capfd.readouterr().err
    # A fresh empty file is one being written: wait for it (here it stays empty, so it turns stale).
    lock.write_text("")
    monkeypatch.setattr(locks, "EMPTY_GRACE_S", 0.2)
    with exclusive(tmp_path / "run"):
        pass


@pytest.mark.parametrize(
    "fields, place",
    [({"host": "gpu-7.cluster"}, "another host"), ({"pid_namespace": "pid:[1]"}, "another container")],
)
def test_a_lock_held_elsewhere_is_never_taken_over_automatically(tmp_path, fields, place):
    lock = _write_lock(tmp_path / "run", **fields)  # its pid means nothing here, dead or not
    before = lock.read_text()
    with pytest.raises(UserError) as e:
        with exclusive(tmp_path / "run", what="training run"):
            pytest.fail("took over a lock held elsewhere")
    assert place in e.value.message and "cannot tell whether it is still running" in e.value.message
    assert f"delete {lock}" in e.value.message
    assert lock.read_text() == before


def test_processes_racing_for_a_stale_lock_have_exactly_one_winner(tmp_path):
    path = tmp_path / "model.tflite"
    for _ in range(3):  # a few rounds: which process wins varies, the outcome must not
        _write_lock(path)
        racers = [_start(_race, path) for _ in range(2)]
        try:
            assert [conn.recv() for _, conn in racers] == ["ready", "ready"]
            for _, conn in racers:
                conn.send("go")
            results = [conn.recv() for _, conn in racers]
            assert sorted(r.split(":")[0] for r in results) == ["refused", "won"], results
            winner, loser = (0, 1) if results[0] == "won" else (1, 0)
            assert f"pid {racers[winner][0].pid} " in results[loser]
            assert json.loads(lock_path(path).read_text())["pid"] == racers[winner][0].pid
            racers[winner][1].send("release")
        finally:
            for process, _ in racers:
                process.join(30)
        assert [p.exitcode for p, _ in racers] == [0, 0]
        assert list(tmp_path.iterdir()) == []
