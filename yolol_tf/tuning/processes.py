"""A search as a chain of child processes of ``trials_per_process`` trials each, so memory stays flat.

TensorFlow keeps some memory of every model a process trained, even after ``clear_session``
(tensorflow#61791); a new process starts clean. Each child continues the same search folder (keras-tuner's
oracle resumes it) and exits with :data:`MORE_TRIALS` while the search has trials left.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from yolol_tf.errors import UserError
from yolol_tf.tuning.config import TuneConfig, search_dir

CHILD_ENV = "YOLOL_TF_TUNE_CHILD"  # set in a child: it runs its trials itself rather than spawning more
MORE_TRIALS = 75  # a child's exit status: it ran its share of trials, the search goes on
_CHILD_CODE = "from yolol_tf.tuning.processes import child_main; child_main()"


def in_child() -> bool:
    """Whether this process is a child of :func:`run_in_processes`."""
    return os.environ.get(CHILD_ENV) == "1"


def run_in_processes(config: TuneConfig, role: str) -> Path:
    """Runs the search as a chain of child processes of ``trials_per_process`` trials each.

    Args:
        config: the search's settings.
        role: "single" or "worker" (a chief trains nothing, so it needs no children).

    Returns:
        The search folder.
    """
    # Fixed here so every child continues the same folder and, as a worker, the same tuner id (a child
    # killed mid-trial leaves its trial to the next child under that id).
    worker_id = config.worker_id or (f"{socket.gethostname()}-{os.getpid()}" if role == "worker" else None)
    child = dataclasses.replace(config, out=str(search_dir(config, role)), worker_id=worker_id)
    while True:
        status = subprocess.call(
            [sys.executable, "-c", _CHILD_CODE, json.dumps(dataclasses.asdict(child))],
            env={**os.environ, CHILD_ENV: "1"},
        )
        if status == 0:
            return Path(child.out)
        if status != MORE_TRIALS:
            raise UserError(
                f"A search process ended with exit status {status} (see its messages above)", exit_code=1
            )
        child = dataclasses.replace(child, overwrite=False)


def child_main() -> None:
    """Entry point of a child process of :func:`run_in_processes` (the config as JSON in argv[1])."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from yolol_tf.tuning.search import run_search  # the search imports this module

    try:
        finished = run_search(TuneConfig(**json.loads(sys.argv[1])), None)[1]
    except UserError as e:
        print(f"error: {e.message}", file=sys.stderr)
        sys.exit(e.exit_code)
    sys.exit(0 if finished else MORE_TRIALS)
