"""Training on several GPUs or machines with TensorFlow's own distribution strategies.

strategy.py     make_strategy, TF_CONFIG from --workers/--task-index, Slurm or Kubernetes; who is chief
custom_fit.py   Model.fit for MultiWorkerMirroredStrategy (keras-team/keras#20585), file sharding
"""

from yolol_tf.training.distribute.custom_fit import custom_fit, shard_by_files
from yolol_tf.training.distribute.strategy import (
    KINDS,
    TASK_TYPES,
    expand_hostlist,
    is_chief,
    make_strategy,
    needs_custom_loop,
    num_workers,
    read_tf_config,
    tf_config_for,
    tf_config_from_slurm,
)

__all__ = [
    "KINDS",
    "TASK_TYPES",
    "custom_fit",
    "expand_hostlist",
    "is_chief",
    "make_strategy",
    "needs_custom_loop",
    "num_workers",
    "read_tf_config",
    "shard_by_files",
    "tf_config_for",
    "tf_config_from_slurm",
]
