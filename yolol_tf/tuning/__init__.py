"""Hyperparameter search with keras-tuner, on one machine or as a chief and workers.

    TuneConfig, tune(config)        the search (tuning/search.py)
    load_space(model, path)         a model's search space, narrowed by a YAML (tuning/space.py)

Names resolve lazily (PEP 562): keras-tuner and TensorFlow load only when a search runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "TuneConfig": "yolol_tf.tuning.search",
    "tune": "yolol_tf.tuning.search",
    "load_space": "yolol_tf.tuning.space",
}
__all__ = ["TuneConfig", "load_space", "tune"]

if TYPE_CHECKING:
    from yolol_tf.tuning.search import TuneConfig, tune
    from yolol_tf.tuning.space import load_space


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
