"""Choosing a distribution strategy and describing the cluster: ``make_strategy`` and ``TF_CONFIG``.

``make_strategy("mirrored")`` replicates the model on every local GPU; ``make_strategy("multi-worker")``
spans machines with ``MultiWorkerMirroredStrategy``, described by ``TF_CONFIG`` (written for you from
``--workers``/``--task-index``, or from a Slurm step, or a Kubernetes indexed Job's index).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from yolol_tf.addresses import parse_address
from yolol_tf.errors import UserError

KINDS = ("auto", "one-device", "mirrored", "multi-worker")
# Task types MultiWorkerMirroredStrategy understands ("ps" belongs to ParameterServerStrategy, unused here).
TASK_TYPES = ("chief", "worker", "evaluator")
log = logging.getLogger(__name__)


def make_strategy(
    kind: str = "auto", workers: str | Sequence[str] | None = None, task_index: int | None = None
) -> Any:
    """Returns the ``tf.distribute.Strategy`` to build, compile and train under.

    Call it before any other TensorFlow work: a multi-worker strategy configures the runtime's collective
    ops, which TensorFlow only allows before it has started.

    Args:
        kind: "auto" (multi-worker if ``TF_CONFIG`` names several tasks, else mirrored if there are several
            local GPUs, else the default strategy), "one-device", "mirrored" (all local GPUs, or all logical
            CPUs where there is no GPU) or "multi-worker".
        workers: "host:port" of every worker, in task order (a list or one comma-separated string); writes
            ``TF_CONFIG`` for this process, replacing any already set.
        task_index: this process's position in ``workers``; default ``$JOB_COMPLETION_INDEX`` (a Kubernetes
            indexed Job).

    Returns:
        The strategy.
    """
    if kind not in KINDS:
        raise UserError(f"Unknown strategy {kind!r}. Choose one of: {', '.join(KINDS)}")
    if workers:
        os.environ["TF_CONFIG"] = json.dumps(tf_config_for(workers, task_index))
    elif task_index is not None:
        raise UserError(f"--task-index needs --workers. Received: task_index={task_index}")
    elif kind == "multi-worker" and not os.environ.get("TF_CONFIG"):
        slurm = tf_config_from_slurm()
        if slurm is None:
            raise UserError(
                "strategy 'multi-worker' needs the cluster: set TF_CONFIG, pass --workers host:port,... "
                "--task-index N, or launch with srun"
            )
        os.environ["TF_CONFIG"] = json.dumps(slurm)
    tf_config = read_tf_config()

    import tensorflow as tf

    if kind == "auto":
        if tf_config is not None and sum(len(v) for v in tf_config["cluster"].values()) > 1:
            kind = "multi-worker"
        elif len(tf.config.get_visible_devices("GPU")) > 1:  # GPUs the device check hid don't count
            kind = "mirrored"
        else:
            return tf.distribute.get_strategy()
    if kind == "one-device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if kind == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if tf_config is None:
        raise UserError("strategy 'multi-worker' needs TF_CONFIG (or --workers host:port,... --task-index N)")
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as error:
        # A bug in the caller, not the user's to fix: say what the order must be.
        raise RuntimeError(
            f"{error}: call yolol_tf.training.distribute.make_strategy before any other TensorFlow work "
            "(creating datasets, tensors or models)"
        ) from error
    except ValueError as error:
        raise UserError(f"Cannot start the multi-worker strategy from TF_CONFIG: {error}") from None
    task = tf_config["task"]
    log.info(
        "Task %s:%s of %d workers, %d replicas in sync",
        task["type"],
        task["index"],
        sum(len(v) for v in tf_config["cluster"].values()),
        strategy.num_replicas_in_sync,
    )
    return strategy


def tf_config_for(workers: str | Sequence[str], task_index: int | None = None) -> dict:
    """The ``TF_CONFIG`` of worker ``task_index`` in a cluster of ``workers``.

    Args:
        workers: "host:port" of every worker (a list or one comma-separated string).
        task_index: this worker's position; default ``$JOB_COMPLETION_INDEX``.
    """
    if isinstance(workers, str):
        workers = [w.strip() for w in workers.split(",") if w.strip()]
    workers = list(workers)
    for address in workers:
        parse_address(address, "--workers")
    if len(set(workers)) != len(workers):
        raise UserError(f"--workers names an address twice. Received: workers={','.join(workers)}")
    if task_index is None:
        index = os.environ.get("JOB_COMPLETION_INDEX")
        if index is None:
            raise UserError("--workers needs --task-index N (this process's position in the list)")
        try:
            task_index = int(index)
        except ValueError:
            raise UserError(f"JOB_COMPLETION_INDEX must be an integer. Received: {index!r}") from None
    if not 0 <= task_index < len(workers):
        raise UserError(
            f"--task-index must be in 0..{len(workers) - 1} for {len(workers)} workers. Received: {task_index}"
        )
    return {"cluster": {"worker": workers}, "task": {"type": "worker", "index": task_index}}


def read_tf_config(text: str | None = None) -> dict | None:
    """Parses and validates ``TF_CONFIG``; None when it is unset or empty.

    Args:
        text: the JSON to check; default the ``TF_CONFIG`` environment variable.
    """
    if text is None:
        text = os.environ.get("TF_CONFIG", "")
    if not text.strip():
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(
            f"TF_CONFIG is not valid JSON ({error.msg} at character {error.pos}). Received: {text!r}"
        ) from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster:
        raise UserError(
            f'TF_CONFIG needs a "cluster" mapping task types to "host:port" lists. Received: {text!r}'
        )
    for job, addresses in cluster.items():
        if job not in TASK_TYPES:
            raise UserError(
                f"TF_CONFIG cluster has an unknown task type {job!r}; use {', '.join(TASK_TYPES)}"
            )
        if not isinstance(addresses, list) or not addresses:
            raise UserError(
                f'TF_CONFIG cluster "{job}" must be a non-empty list of "host:port". Received: {addresses!r}'
            )
        for address in addresses:
            parse_address(address, f'TF_CONFIG cluster "{job}"')
    if len(cluster.get("chief", [])) > 1:
        raise UserError(f"TF_CONFIG names {len(cluster['chief'])} chiefs; there can be one")
    task = config.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise UserError(f'TF_CONFIG needs a "task" with "type" and "index". Received: {text!r}')
    if task["type"] not in cluster:
        raise UserError(f"TF_CONFIG task type {task['type']!r} is not in its cluster ({', '.join(cluster)})")
    size = len(cluster[task["type"]])
    if not isinstance(task["index"], int) or isinstance(task["index"], bool) or not 0 <= task["index"] < size:
        raise UserError(
            f"TF_CONFIG task index must be an integer in 0..{size - 1} for {size} {task['type']} tasks. "
            f"Received: {task['index']!r}"
        )
    return config


def tf_config_from_slurm(env: Mapping[str, str] | None = None, port: int = 12345) -> dict | None:
    """The ``TF_CONFIG`` of this Slurm task, or None outside a Slurm step of several tasks.

    One worker per task, task ``i`` being worker ``i``; tasks sharing a node get consecutive ports. Assumes
    Slurm's default block distribution (the first tasks on the first node), as ``SlurmClusterResolver`` does.

    Args:
        env: the environment to read; default ``os.environ``.
        port: the first task's port on each node.
    """
    env = os.environ if env is None else env
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
    tasks = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    if not nodelist or not tasks or "SLURM_PROCID" not in env:
        return None
    nodes = expand_hostlist(nodelist)
    counts = _expand_counts(tasks)
    if len(counts) != len(nodes):
        raise UserError(f"Slurm lists {len(nodes)} nodes ({nodelist}) but tasks per node {tasks!r}")
    workers = [f"{node}:{port + i}" for node, count in zip(nodes, counts, strict=True) for i in range(count)]
    if len(workers) < 2:
        return None
    return tf_config_for(workers, int(env["SLURM_PROCID"]))


def expand_hostlist(hostlist: str) -> list[str]:
    """Expands a Slurm host list such as ``"gpu[01-03,07],login1"`` into host names, in order."""
    hosts: list[str] = []
    for match in re.finditer(r"([^,\[]+)(?:\[([^\]]+)\])?([^,]*)", hostlist):
        prefix, ranges, suffix = match.groups()
        if not ranges:
            hosts.append(prefix + suffix)
            continue
        for part in ranges.split(","):
            first, _, last = part.partition("-")
            for number in range(int(first), int(last or first) + 1):
                hosts.append(f"{prefix}{number:0{len(first)}d}{suffix}")
    return hosts


def _expand_counts(tasks_per_node: str) -> list[int]:
    """Expands Slurm's ``"2(x3),1"`` into ``[2, 2, 2, 1]``."""
    counts: list[int] = []
    for part in tasks_per_node.split(","):
        number, _, repeat = part.partition("(x")
        counts += [int(number)] * int(repeat.rstrip(")") or 1)
    return counts


def is_chief(strategy: Any = None) -> bool:
    """Whether this process writes the run folder: always, except on non-chief workers of a cluster.

    Args:
        strategy: the strategy in use; default the current one.
    """
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    cluster = resolver.cluster_spec().as_dict()
    # Without a "chief" task, worker 0 plays the chief (TensorFlow's own convention).
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster


def needs_custom_loop(strategy: Any) -> bool:
    """True where ``Model.fit`` cannot train under ``strategy`` and :func:`custom_fit` must (multi-worker)."""
    import tensorflow as tf

    return isinstance(
        strategy,
        (tf.distribute.MultiWorkerMirroredStrategy, tf.distribute.experimental.MultiWorkerMirroredStrategy),
    )


def num_workers(strategy: Any) -> int:
    """The number of worker processes training together under ``strategy`` (1 off a cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 1
    cluster = resolver.cluster_spec().as_dict()
    return max(1, len(cluster.get("worker", [])) + len(cluster.get("chief", [])))
