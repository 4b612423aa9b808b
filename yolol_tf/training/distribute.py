"""Training on several GPUs or machines with TensorFlow's own distribution strategies.

``make_strategy("mirrored")`` replicates the model on every local GPU; ``make_strategy("multi-worker")``
spans machines with ``MultiWorkerMirroredStrategy``, described by ``TF_CONFIG`` (written for you from
``--workers``/``--task-index``, or from a Slurm step). Keras 3's ``Model.fit`` fails under
``MultiWorkerMirroredStrategy`` on TensorFlow 2.16 to 2.21 (keras-team/keras#20585: its first-batch build
calls ``strategy.reduce`` on a tuple, and its step outputs are reduced with a ``Sum`` over a scalar), so
:func:`custom_fit` is ``Model.fit`` for that case: the model's own ``train_step``/``test_step`` run through
``strategy.run`` inside ``tf.function``, and a ``keras.callbacks.CallbackList`` gets the same hooks and logs
as under ``fit``. The chief writes the run folder; other workers write to a scratch folder that is deleted.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from yolol_tf.errors import UserError

KINDS = ("auto", "one-device", "mirrored", "multi-worker")
# Task types MultiWorkerMirroredStrategy understands ("ps" belongs to ParameterServerStrategy, unused here).
TASK_TYPES = ("chief", "worker", "evaluator")
# Callback attributes that name where a callback writes; a non-chief worker's are pointed at scratch space.
_OUTPUT_ATTRIBUTES = ("filepath", "filename", "log_dir", "path")
_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})$")

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
        elif len(tf.config.list_physical_devices("GPU")) > 1:
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
    log.info("Task %s:%s of %d workers, %d replicas in sync", task["type"], task["index"],
             sum(len(v) for v in tf_config["cluster"].values()), strategy.num_replicas_in_sync)
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
        _check_address(address, "--workers")
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
        raise UserError(f"TF_CONFIG is not valid JSON ({error.msg} at character {error.pos}). Received: {text!r}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster:
        raise UserError(f'TF_CONFIG needs a "cluster" mapping task types to "host:port" lists. Received: {text!r}')
    for job, addresses in cluster.items():
        if job not in TASK_TYPES:
            raise UserError(f"TF_CONFIG cluster has an unknown task type {job!r}; use {', '.join(TASK_TYPES)}")
        if not isinstance(addresses, list) or not addresses:
            raise UserError(f'TF_CONFIG cluster "{job}" must be a non-empty list of "host:port". Received: {addresses!r}')
        for address in addresses:
            _check_address(address, f'TF_CONFIG cluster "{job}"')
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


def _check_address(address: Any, where: str) -> None:
    match = _ADDRESS.match(address) if isinstance(address, str) else None
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise UserError(f'{where}: each address must be "host:port" with a port in 1..65535. Received: {address!r}')


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


def custom_fit(
    model: Any,
    train_ds: Any,
    *,
    epochs: int,
    steps_per_epoch: int | None = None,
    validation_data: Any = None,
    validation_steps: int | None = None,
    callbacks: Sequence[Any] | None = None,
    strategy: Any = None,
    initial_epoch: int = 0,
    verbose: int | str = 1,
    backup_dir: str | os.PathLike | None = None,
) -> Any:
    """``model.fit(train_ds, ...)`` that also works under ``MultiWorkerMirroredStrategy``.

    The model must have been built (or be buildable from ``train_ds``'s shapes) and compiled inside
    ``strategy.scope()``. Each step runs the model's own ``train_step`` (its compiled loss, optimizer and
    metrics) on every replica; the optimizer all-reduces the gradients and Keras scales the loss by the
    number of replicas, so a step equals one step over the global batch. Metric values in the logs are
    aggregated over all replicas. Every worker runs every callback, so collectives stay in step; on
    non-chief workers, callbacks that write files (attributes ``filepath``, ``filename``, ``log_dir`` or
    ``path``) write to a scratch folder that is deleted, and there is no progress bar.

    A ``keras.callbacks.BackupAndRestore`` in ``callbacks`` is replaced by an epoch-level backup in its
    folder (``tf.train.Checkpoint`` of the model and optimizer, written by the chief): a run killed and
    restarted with the same arguments restores it and goes on from the next epoch. Keras' own callback
    cannot do this outside ``Model.fit`` and would make every worker write the same files.

    Args:
        model: a compiled Keras model.
        train_ds: batches of the global batch size. Each worker keeps its share of every batch, so a
            shuffled dataset needs the same seed on every worker; or each reads its own files, see
            :func:`shard_by_files`.
        epochs: index of the last epoch, as in ``Model.fit``.
        steps_per_epoch: steps per epoch (one pass over ``train_ds`` when None).
        validation_data: a batched dataset evaluated after every epoch; its figures get a ``val_`` prefix.
        validation_steps: batches of ``validation_data`` per evaluation (all when None).
        callbacks: Keras callbacks.
        strategy: the strategy the model was compiled under; default the model's.
        initial_epoch: the epoch to start at.
        verbose: 0 silent, 1 progress bar, 2 one line per epoch (chief only).
        backup_dir: folder for the epoch-level backup, when no ``BackupAndRestore`` callback names one.

    Returns:
        The ``keras.callbacks.History`` of the run.
    """
    import keras

    strategy = strategy or model.distribute_strategy
    chief = is_chief(strategy)
    callbacks = list(callbacks or [])
    for callback in [c for c in callbacks if isinstance(c, keras.callbacks.BackupAndRestore)]:
        callbacks.remove(callback)
        backup_dir = backup_dir or callback.backup_dir
    scratch = None if chief else Path(tempfile.mkdtemp(prefix="yolol-tf-worker-"))
    try:
        if scratch is not None:
            _redirect_outputs(callbacks, scratch)
        with strategy.scope():
            _build(model, train_ds)
        backup = _EpochBackup(model, strategy, Path(backup_dir), scratch) if backup_dir else None
        if backup is not None:
            initial_epoch = max(initial_epoch, backup.restore())
        callback_list = keras.callbacks.CallbackList(
            callbacks, add_history=True, add_progbar=chief and verbose != 0,
            verbose=1 if verbose == "auto" else verbose, epochs=epochs, steps=steps_per_epoch, model=model,
        )
        train_function = _step_function(model, strategy, model.train_step)
        test_function = _step_function(model, strategy, model.test_step)
        train_dist = strategy.experimental_distribute_dataset(_default_sharding(train_ds))
        val_dist = None
        if validation_data is not None:
            val_dist = strategy.experimental_distribute_dataset(_default_sharding(validation_data))

        model.stop_training = False
        callback_list.on_train_begin()
        iterator = iter(train_dist) if steps_per_epoch else None
        epoch_logs: dict = {}
        for epoch in range(initial_epoch, epochs):
            model.reset_metrics()
            callback_list.on_epoch_begin(epoch)
            if iterator is None or steps_per_epoch is None:
                iterator = iter(train_dist)
            logs, ran = _run_epoch(train_function, iterator, steps_per_epoch, callback_list, model, "train")
            if steps_per_epoch and ran < steps_per_epoch:
                log.warning("The training data ran out after %d of %d steps; use a repeated dataset", ran,
                            steps_per_epoch)
                iterator = None
            epoch_logs = dict(logs)
            if val_dist is not None:
                model.reset_metrics()
                callback_list.on_test_begin()
                val_logs, _ = _run_epoch(test_function, iter(val_dist), validation_steps, callback_list, model,
                                         "test")
                callback_list.on_test_end(val_logs)
                epoch_logs.update({f"val_{name}": value for name, value in val_logs.items()})
            callback_list.on_epoch_end(epoch, epoch_logs)
            # After the callbacks, so a restored run never skips an epoch whose checkpoints were not written.
            if backup is not None:
                backup.save(epoch + 1)
            if model.stop_training:
                break
        if epochs > initial_epoch:
            model.optimizer.finalize_variable_values(model.trainable_weights)
        callback_list.on_train_end(logs=epoch_logs)
        if backup is not None:
            backup.finish()
        return next(c for c in callback_list.callbacks if isinstance(c, keras.callbacks.History))
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def shard_by_files(dataset: Any, strategy: Any, num_files: int) -> Any:
    """``dataset`` set to be split between workers by whole files, where there are enough of them.

    Each worker then reads only its own files (TFRecord shards of the store), rather than reading
    everything and keeping every n-th batch. TensorFlow's default ("AUTO") fails outright with fewer
    files than workers, so this picks FILE or DATA itself. Without it, :func:`custom_fit` shards by data.

    Args:
        dataset: a dataset that reads ``num_files`` files.
        strategy: the strategy it will be distributed by.
        num_files: how many files it reads.
    """
    import tensorflow as tf

    policy = tf.data.experimental.AutoShardPolicy
    options = tf.data.Options()
    workers = num_workers(strategy)
    options.experimental_distribute.auto_shard_policy = policy.FILE if num_files >= workers else policy.DATA
    return dataset.with_options(options)


def num_workers(strategy: Any) -> int:
    """The number of worker processes training together under ``strategy`` (1 off a cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 1
    cluster = resolver.cluster_spec().as_dict()
    return max(1, len(cluster.get("worker", [])) + len(cluster.get("chief", [])))


def _default_sharding(dataset: Any) -> Any:
    """Shards by data unless a policy was chosen: that works for any dataset and number of files."""
    import tensorflow as tf

    policy = tf.data.experimental.AutoShardPolicy
    if dataset.options().experimental_distribute.auto_shard_policy != policy.AUTO:
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy.DATA
    return dataset.with_options(options)


def _build(model: Any, dataset: Any) -> None:
    """Creates the model's, optimizer's and metrics' variables before any step is traced.

    Variables created inside ``strategy.run`` in a ``tf.function`` break under multi-worker strategies;
    ``Model.fit`` avoids it the same way, from the data's shapes alone.
    """
    symbolic_build = getattr(model, "_symbolic_build", None)
    if symbolic_build is not None:
        symbolic_build(data_batch=dataset.element_spec)
        return
    # Fallback for a Keras without it: the model and optimizer at least.
    if not model.built:
        model.build(dataset.element_spec[0].shape)
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def _step_function(model: Any, strategy: Any, step: Any) -> Any:
    """One distributed step of ``step`` (train_step or test_step) that returns the aggregated metrics."""
    import tensorflow as tf

    if model.jit_compile is True and strategy.num_replicas_in_sync == 1:
        # Keras itself only compiles with XLA off tf.distribute; the same here.
        step = tf.function(step, jit_compile=True, reduce_retracing=True)

    @tf.function
    def run(iterator: Any) -> dict:
        strategy.run(step, args=(next(iterator),))
        # Read in cross-replica context: metric variables are summed over every replica of every worker.
        results: dict = {}
        for metric in model.metrics:
            result = metric.result()
            results.update(result if isinstance(result, dict) else {metric.name: result})
        return results

    return run


def _run_epoch(function: Any, iterator: Any, steps: int | None, callbacks: Any, model: Any,
               mode: str) -> tuple[dict, int]:
    """Runs ``function`` over ``iterator`` for ``steps`` steps (or to its end); returns (logs, steps run)."""
    import tensorflow as tf

    logs: dict = {}
    step = 0
    while steps is None or step < steps:
        getattr(callbacks, f"on_{mode}_batch_begin")(step)
        try:
            # Tensors, as Model.fit hands them over: converting here would wait for every step to finish.
            logs = function(iterator)
        except (StopIteration, tf.errors.OutOfRangeError):
            break
        getattr(callbacks, f"on_{mode}_batch_end")(step, logs)
        step += 1
        if mode == "train" and model.stop_training:
            break
    return _pythonify(logs), step


def _pythonify(logs: Mapping[str, Any]) -> dict:
    """Tensors to Python floats (scalars) or numpy arrays, as Keras hands logs to callbacks."""
    import numpy as np

    out = {}
    for name, value in logs.items():
        array = np.asarray(value)
        out[name] = float(array) if array.size == 1 else array
    return out


def _redirect_outputs(callbacks: Sequence[Any], scratch: Path) -> None:
    """Points a non-chief worker's file-writing callbacks into ``scratch``, keeping file names."""
    for number, callback in enumerate(callbacks):
        for attribute in _OUTPUT_ATTRIBUTES:
            value = getattr(callback, attribute, None)
            if isinstance(value, (str, os.PathLike)) and str(value):
                target = scratch / f"{number}-{attribute}" / Path(value).name
                target.parent.mkdir(parents=True, exist_ok=True)
                setattr(callback, attribute, type(value)(target) if isinstance(value, Path) else str(target))


class _EpochBackup:
    """Epoch-level fault tolerance: the model and optimizer after each epoch, restored on a restart.

    Every worker saves (a save may read values through collectives); only the chief's copy, in the
    backup folder, is kept. Every worker restores from the backup folder, which must therefore be on
    storage they all share, like the run folder.

    Args:
        model: the built, compiled model.
        strategy: the strategy it was built under.
        directory: the backup folder.
        scratch: a non-chief worker's scratch folder; None on the chief.
    """

    def __init__(self, model: Any, strategy: Any, directory: Path, scratch: Path | None):
        import tensorflow as tf

        self.strategy = strategy
        self.directory = directory
        self.chief = scratch is None
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, str(directory if self.chief else scratch / "backup"), max_to_keep=2
        )

    def restore(self) -> int:
        """Restores the latest backup, if any; returns the number of epochs it had completed."""
        import tensorflow as tf

        latest = tf.train.latest_checkpoint(str(self.directory)) if self.directory.is_dir() else None
        epochs = int(latest.rsplit("-", 1)[1]) if latest else 0
        self._check_agreement(epochs)
        if latest:
            try:
                self.checkpoint.restore(latest).assert_existing_objects_matched()
            except (AssertionError, ValueError, tf.errors.OpError) as error:
                raise UserError(
                    f"The backup {latest} does not fit this model or optimizer ({error}); delete "
                    f"{self.directory} to start over"
                ) from None
            log.info("Restored %s: resuming after epoch %d", latest, epochs)
        return epochs

    def _check_agreement(self, epochs: int) -> None:
        """Stops every worker with one message when they found different backups (no shared storage)."""
        import tensorflow as tf

        if self.strategy.num_replicas_in_sync == 1:
            return
        value = tf.constant([epochs, epochs * epochs], tf.float64)

        @tf.function
        def totals() -> Any:
            def replica() -> Any:
                return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)

            return self.strategy.experimental_local_results(self.strategy.run(replica))[0]

        total, squares = totals().numpy()
        # All equal exactly when n * sum(x^2) == sum(x)^2, and every worker computes the same verdict.
        if not math.isclose(self.strategy.num_replicas_in_sync * squares, total * total):
            raise UserError(
                f"Workers found different backups in {self.directory}: the backup folder (and the run "
                "folder) must be on storage that every worker shares"
            )

    def save(self, epochs: int) -> None:
        """Saves the state after ``epochs`` completed epochs."""
        self.manager.save(checkpoint_number=epochs)

    def finish(self) -> None:
        """Deletes the backup of a finished run (the chief's; scratch copies go with the scratch folder)."""
        if self.chief:
            shutil.rmtree(self.directory, ignore_errors=True)
