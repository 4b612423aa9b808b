"""Model builders, by the name the CLI and the experiment YAML use.

``MODELS`` maps a name to its builder; ``build_model(name, input_shape, num_classes, **options)`` checks the
name and options and builds. Keras is imported on first use so that ``import yolol_tf.models`` (and the CLI's
``--help``) stays fast.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable, Sequence
from typing import Any

from yolol_tf.errors import UserError

MODEL_NAMES = ("dense", "cnn", "resnet50")
DEFAULT_MODEL = "resnet50"  # what a TrainConfig trains when it names no model
_MODULES = {
    "dense": "yolol_tf.models.dense",
    "cnn": "yolol_tf.models.cnn",
    "resnet50": "yolol_tf.models.resnet50",
}


def _builder(name: str) -> Callable[..., Any]:
    return getattr(importlib.import_module(_MODULES[name]), f"build_{name}")


def __getattr__(attribute: str) -> Any:
    # PEP 562: MODELS is built (importing Keras) the first time someone asks for it.
    if attribute == "MODELS":
        models = {name: _builder(name) for name in MODEL_NAMES}
        globals()["MODELS"] = models
        return models
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")


def model_options(name: str) -> dict[str, Any]:
    """Returns a model's options and their defaults (the builder's keyword-only arguments except ``name``)."""
    if name not in MODEL_NAMES:
        raise UserError(f"Unknown model {name!r}. Choose one of: {', '.join(MODEL_NAMES)}")
    parameters = inspect.signature(_builder(name)).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY and p.name != "name"}


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **options: Any):
    """Builds the named model, uncompiled, taking raw pixels 0..255 and returning one logit per class.

    Args:
        name: one of ``MODEL_NAMES`` ("dense", "cnn", "resnet50").
        input_shape: image shape ``(height, width, channels)``.
        num_classes: number of logits.
        **options: the builder's options (see ``model_options(name)``); lists from YAML become tuples.

    Returns:
        A functional ``keras.Model``.
    """
    valid = model_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise UserError(
            f"Unknown option(s) {', '.join(unknown)} for model {name!r}. "
            f"Valid options: {', '.join(f'{k}={v!r}' for k, v in valid.items())}"
        )
    if int(num_classes) < 1:
        raise UserError(f"num_classes must be >= 1. Received: num_classes={num_classes}")
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    return _builder(name)(tuple(int(d) for d in input_shape), int(num_classes), **options)


def load_model(path: str | os.PathLike):
    """Loads a ``.keras`` model saved by this package, uncompiled, in any process.

    Our custom layers register themselves when their module is imported, so a fresh process must import
    them before Keras deserialises the file; every command that loads a model goes through here.

    Args:
        path: the ``.keras`` file.
    """
    import keras

    import yolol_tf.models.layers  # noqa: F401  (registers "yolol_tf>BatchNormalization")

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:  # a corrupt, truncated or foreign file: Keras raises many kinds
        first_line = (str(e).splitlines() or [""])[0][:300]
        raise UserError(f"{path}: cannot load the Keras model ({type(e).__name__}: {first_line})") from None
