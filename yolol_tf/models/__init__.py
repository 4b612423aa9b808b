"""The model registry: each model's builder, search space and options, by the name the CLI and YAML use.

A model is one module of this package named as in :data:`MODEL_NAMES`, holding its builder and a
``SPEC = ModelSpec(...)`` (:mod:`yolol_tf.models.spec`): the CLI, the trainer, the tuner and ``--help`` all
read it. Adding a model = a new module, its name in :data:`MODEL_NAMES`, and its test.

    SPECS[name], get_spec(name)                      the registry entries
    MODELS[name]                                     the builders
    build_model(name, input_shape, num_classes, **options) -> keras.Model (uncompiled)
    model_options(name) -> {option: default}
    pinned_defaults(name) -> {option: default} of the options whose default changed
    load_model(path) -> keras.Model

Model modules import Keras inside their builders, so ``import yolol_tf.models``, the registry and the CLI's
``--help`` load no TensorFlow.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Sequence
from typing import Any

from yolol_tf.errors import UserError
from yolol_tf.models.spec import ModelSpec

MODEL_NAMES = ("dense", "cnn", "resnet50", "lite0")
# The model a search tunes when none is named: small, and quick to train.
QUICK_MODEL = "cnn"
# The model a training run builds when its config names none (`yolol-tf train` always names one).
DEFAULT_MODEL = "resnet50"

SPECS: dict[str, ModelSpec] = {
    name: importlib.import_module(f"{__name__}.{name}").SPEC for name in MODEL_NAMES
}
MODELS = {name: spec.build for name, spec in SPECS.items()}


def get_spec(name: str) -> ModelSpec:
    """The registry entry of the model called ``name``, or a UserError listing the models."""
    if name not in SPECS:
        raise UserError(f"Unknown model {name!r}. Choose one of: {', '.join(MODEL_NAMES)}")
    return SPECS[name]


def model_options(name: str) -> dict[str, Any]:
    """Returns a model's options and their defaults (the builder's keyword-only arguments except ``name``)."""
    parameters = inspect.signature(get_spec(name).build).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY and p.name != "name"}


def pinned_defaults(name: str) -> dict[str, Any]:
    """The current defaults of a model's options whose default changed (``ModelSpec.former_options``): what
    a run's config.yaml, a search's search.yaml and best.yaml write out, so they say which network it was."""
    defaults = model_options(name)
    return {option: defaults[option] for option in get_spec(name).former_options}


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **options: Any):
    """Builds the named model, uncompiled, taking raw pixels 0..255 and returning one logit per class.

    Args:
        name: a name of ``MODEL_NAMES``.
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
    return get_spec(name).build(tuple(int(d) for d in input_shape), int(num_classes), **options)


def load_model(path: str | os.PathLike):
    """Loads a ``.keras`` model saved by this package, uncompiled, in any process.

    Our custom layers register themselves with Keras when their module is imported (``import yolol_tf``
    arranges that, see :mod:`yolol_tf`); this imports them in any case, and turns a file Keras cannot read
    into a one-line error. Every command that loads a model goes through here.

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
