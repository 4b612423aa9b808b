"""Running things as a user or a cluster would: the CLI, Python in a fresh interpreter, worker processes.

Every child runs this checkout's code (the repository root first on PYTHONPATH) with TensorFlow quiet, no
GPU and no inherited TF_CONFIG.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What ``yolol-tf ARGS`` runs.
CLI = "import sys; from yolol_tf.cli import main; sys.exit(main(sys.argv[1:]))"


def python_env(**extra: str) -> dict[str, str]:
    """The environment of a child Python: this one's, less TF_CONFIG, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def run_python(
    *argv: str, cwd: str | os.PathLike = ROOT, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Runs ``python ARGV`` (``-c CODE ...``, ``-m MODULE ...``) in a fresh interpreter; returns its exit
    status and output."""
    return subprocess.run(
        [sys.executable, *argv],
        cwd=cwd,
        env=env or python_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_python(
    *argv: str, cwd: str | os.PathLike = ROOT, env: dict | None = None, **popen
) -> subprocess.Popen:
    """Starts ``python ARGV`` in a fresh interpreter without waiting; ``popen`` goes to subprocess.Popen."""
    return subprocess.Popen([sys.executable, *argv], cwd=cwd, env=env or python_env(), **popen)


def run_cli(
    *args: str, cwd: str | os.PathLike | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Runs ``yolol-tf ARGS`` in a child process, as a user would; returns its exit status and output."""
    return run_python("-c", CLI, *args, cwd=cwd or ROOT, timeout=timeout)


def cli(*args: str) -> int:
    """Runs ``yolol-tf ARGS`` in this process; returns its exit status."""
    from yolol_tf.cli import main

    try:
        return main(list(args))
    except SystemExit as e:  # Typer exits with the status after a command that succeeds
        return int(e.code or 0)


def free_ports(count: int) -> list[int]:
    """Ports on 127.0.0.1 free at the time of asking (held open together so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_all(processes: list[subprocess.Popen], timeout: float) -> list[int | None]:
    """Exit codes of ``processes`` within ``timeout`` seconds in all (None: still running)."""
    deadline = time.monotonic() + timeout
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            codes.append(None)
    return codes


def kill_all(processes: list[subprocess.Popen]) -> None:
    """Kills the processes still running (by their own ids) and reaps them."""
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


def read_logs(folder: Path, pattern: str = "log-*.txt") -> str:
    """The tails of the log files in ``folder``, for a failing assertion's message."""
    return "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in sorted(folder.glob(pattern)))
