"""keras-tuner's chief/worker mode for ``yolol-tf tune``: who this process is, and the chief's server.

keras-tuner reads its role from ``KERASTUNER_TUNER_ID`` (an id containing "chief" runs the oracle),
``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT``; ``--chief``/``--worker`` set them for the length
of the search. Workers reach the chief over gRPC (grpcio, protobuf) and share the search folder.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from yolol_tf.addresses import parse_address
from yolol_tf.errors import UserError

_ENV = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")
# How long a worker waits for the chief to answer before it gives up. keras-tuner itself waits an hour
# (its gRPC timeout), which is how long a worker started after the search finished would hang.
CHIEF_TIMEOUT = 15.0


def consecutive_failures(oracle: Any) -> int:
    """How many trials failed in a row at the end of the finished ones."""
    count = 0
    for trial_id in reversed(oracle.end_order):
        if oracle.trials[trial_id].status != "FAILED":
            break
        count += 1
    return count


def stop_if_failing(oracle: Any, limit: int) -> bool:
    """Stops handing out trials after ``limit`` failures in a row (the oracle then says STOPPED)."""
    if limit and consecutive_failures(oracle) >= limit:
        oracle.max_trials = len(oracle.trials)
        return True
    return False


def serve(
    oracle: Any, host: str, port: int, max_failures: int, *, poll: float = 0.2, grace: float = 10.0
) -> None:
    """Serves ``oracle`` to workers over gRPC until the search is done and the workers were told so.

    keras-tuner's own ``oracle_chief.start_server`` checks for the end every 20 s and waits forever for
    a worker that stopped asking; this loop uses its servicer, checks every ``poll`` seconds, stops
    handing out trials after ``max_failures`` failures in a row, and once no trial runs waits at most
    ``grace`` seconds for the remaining workers to come and hear STOPPED.

    Args:
        oracle: the search's oracle.
        host: address to listen on (0.0.0.0: all interfaces).
        port: TCP port.
        max_failures: see ``TuneConfig.max_failures``.
        poll: seconds between checks.
        grace: seconds to wait for idle workers after the last trial ended.
    """
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer
    from keras_tuner.src.engine.oracle import LOCKS

    # One thread, as in keras-tuner: oracle calls are serialised anyway.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise UserError(
            f"--chief {host}:{port}: cannot listen there (port in use, or not an address of this machine)"
        )
    server.start()
    print(f"Chief: serving trials on {host}:{port}", file=sys.stderr, flush=True)
    idle_since = None
    try:
        while True:
            time.sleep(poll)
            with LOCKS[oracle]:
                stop_if_failing(oracle, max_failures)
                running = bool(oracle.ongoing_trials)
                waiting = bool(oracle.tuner_ids)
            if not servicer.stop_triggered or running:
                idle_since = None
                continue
            idle_since = idle_since or time.monotonic()
            if not waiting or time.monotonic() - idle_since > grace:
                break
    finally:
        server.stop(grace=1.0)


def reach_chief(host: str, port: int, timeout: float | None = None) -> None:
    """Returns once the chief at ``host:port`` accepts connections; a UserError after ``timeout`` seconds.

    Args:
        host: the chief's host.
        port: its port.
        timeout: seconds to wait; default :data:`CHIEF_TIMEOUT`.
    """
    import grpc

    timeout = CHIEF_TIMEOUT if timeout is None else timeout
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    channel = grpc.insecure_channel(target)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        raise UserError(
            f"--worker: no chief answers at {target} after {timeout:g} s. The search may have finished "
            "(its results are in the shared --out folder: trials.csv, best.yaml), the chief may not be "
            "started yet, or the address is wrong",
            exit_code=1,
        ) from None
    finally:
        channel.close()


def role_of(config: Any) -> tuple[str, dict[str, str]]:
    """ "single", "chief" or "worker", and the KERASTUNER_* environment that keras-tuner reads for it.

    Args:
        config: a ``TuneConfig`` (its chief, worker and worker_id); without them, the environment decides.
    """
    if config.chief and config.worker:
        raise UserError("Use --chief on one process and --worker on the others, not both on one")
    if config.chief or config.worker:
        flag, address = ("--chief", config.chief) if config.chief else ("--worker", config.worker)
        host, port = parse_address(address, flag)
        tuner_id = "chief" if config.chief else (config.worker_id or f"{socket.gethostname()}-{os.getpid()}")
        if config.worker and "chief" in tuner_id:
            # keras-tuner treats any tuner id containing "chief" as the oracle.
            raise UserError(f"--worker-id must not contain 'chief'. Received: --worker-id {tuner_id}")
        env = dict(zip(_ENV, (tuner_id, host, str(port)), strict=True))
    elif "KERASTUNER_ORACLE_IP" in os.environ:
        missing = [k for k in _ENV if k not in os.environ]
        if missing:
            raise UserError(f"KERASTUNER_ORACLE_IP is set but {', '.join(missing)} is not")
        env = {k: os.environ[k] for k in _ENV}
    else:
        return "single", {}
    return ("chief" if "chief" in env["KERASTUNER_TUNER_ID"] else "worker"), env


@contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
