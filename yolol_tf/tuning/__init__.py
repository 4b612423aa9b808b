"""Hyperparameter search with keras-tuner, on one machine or as a chief and workers.

    TuneConfig                      a search's settings and their checks (tuning/config.py)
    load_space(model, path)         a model's search space, narrowed by a YAML (tuning/space.py)
    tune(config)                    the search and its hypermodel (tuning/search.py)

and behind ``tune``: keras-tuner's Tuner classes (tuning/tuners.py), per-trial memory (tuning/memory.py),
trials in child processes (tuning/processes.py), chief and workers (tuning/cluster.py), and trials.csv,
trials.png and best.yaml (tuning/report.py).

``tune`` resolves lazily (PEP 562): keras-tuner and TensorFlow load only when a search runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from yolol_tf.lazy import lazy_attributes
from yolol_tf.tuning.config import TuneConfig
from yolol_tf.tuning.space import load_space

__all__ = ["TuneConfig", "load_space", "tune"]

if TYPE_CHECKING:
    from yolol_tf.tuning.search import tune

__getattr__, __dir__ = lazy_attributes(__name__, {"tune": "yolol_tf.tuning.search"})
