"""``Model.fit`` for multi-worker training: the compiled model's own steps under ``strategy.run``.

Keras 3's ``Model.fit`` fails under ``MultiWorkerMirroredStrategy`` on TensorFlow 2.16 to 2.21
(keras-team/keras#20585: its first-batch build calls ``strategy.reduce`` on a tuple, and its step outputs
are reduced with a ``Sum`` over a scalar), so :func:`custom_fit` is ``Model.fit`` for that case: the
model's own ``train_step``/``test_step`` run through ``strategy.run`` inside ``tf.function``, and a
``keras.callbacks.CallbackList`` gets the same hooks and logs as under ``fit``. The chief writes the run
folder; other workers write to a scratch folder that is deleted.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from yolol_tf.errors import UserError
from yolol_tf.training.distribute.strategy import is_chief, num_workers

# Callback attributes that name where a callback writes; a non-chief worker's are pointed at scratch space.
_OUTPUT_ATTRIBUTES = ("filepath", "filename", "log_dir", "path")

log = logging.getLogger(__name__)


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
    delete_backup = True
    for callback in [c for c in callbacks if isinstance(c, keras.callbacks.BackupAndRestore)]:
        callbacks.remove(callback)
        backup_dir = backup_dir or callback.backup_dir
        delete_backup = callback.delete_checkpoint
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
            callbacks,
            add_history=True,
            add_progbar=chief and verbose != 0,
            verbose=1 if verbose == "auto" else verbose,
            epochs=epochs,
            steps=steps_per_epoch,
            model=model,
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
                log.warning(
                    "The training data ran out after %d of %d steps; use a repeated dataset",
                    ran,
                    steps_per_epoch,
                )
                iterator = None
            epoch_logs = dict(logs)
            if val_dist is not None:
                model.reset_metrics()
                callback_list.on_test_begin()
                val_logs, _ = _run_epoch(
                    test_function, iter(val_dist), validation_steps, callback_list, model, "test"
                )
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
        if backup is not None and delete_backup:
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


def _run_epoch(
    function: Any, iterator: Any, steps: int | None, callbacks: Any, model: Any, mode: str
) -> tuple[dict, int]:
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
