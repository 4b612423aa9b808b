"""Training: settings, compiling, the fit with its callbacks, the report, and distribution strategies.

    TrainConfig                     the settings of one run (training/config.py)
    train(config, resume=...)       data -> model -> fit -> a run folder (training/loop.py)
    compile_model(model, config, info, ...)

Names resolve lazily (PEP 562), so ``import yolol_tf.training`` loads no TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "TrainConfig": "yolol_tf.training.loop",
    "train": "yolol_tf.training.loop",
    "compile_model": "yolol_tf.training.loop",
}
__all__ = ["TrainConfig", "compile_model", "train"]

if TYPE_CHECKING:
    from yolol_tf.training.loop import TrainConfig, compile_model, train


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
