"""What the registry knows of a model: its builder, its search space and how sampled values become options.

Pure Python (no Keras): the CLI's ``--help`` prints every model's space from here, and a model module can
declare its :class:`ModelSpec` at import without loading TensorFlow. :class:`Param` is one hyperparameter
of a search space; :mod:`yolol_tf.tuning.space` adds the training-level ones every model shares.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Param:
    """One hyperparameter of a search space.

    Args:
        name: the name in trials.csv and in space files.
        kind: "float", "int" or "choice" (a list of values), or "fixed".
        low: smallest value of a float or int range.
        high: largest value of a float or int range.
        log: sample a range on a log scale.
        step: grid step of a range (None: continuous).
        values: the choices of a "choice", or the one value of a "fixed".
        allowed: the only values a space file may choose (None: any number within ``limits``).
        limits: hard bounds a space file's numbers must stay within.
        pattern: for text values without ``allowed``: a regular expression they must match.
        when: (parent name, parent values): active only when the parent takes one of those values.
        help: what the parameter does, for the tables.
    """

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    values: tuple = ()
    allowed: tuple | None = None
    limits: tuple[float, float] | None = None
    pattern: str | None = None
    when: tuple[str, tuple] | None = None
    help: str = ""

    def describe(self) -> str:
        """The range or choices in a few characters, as shown in the tables."""
        if self.kind == "fixed":
            return f"= {self.values[0]}"
        if self.kind == "choice":
            return " | ".join(str(v) for v in self.values)
        step = f" step {self.step:g}" if self.step else ""
        return f"{self.low:g} .. {self.high:g}{' log' if self.log else ''}{step}"


@dataclass(frozen=True)
class ModelSpec:
    """One model as the CLI, the trainer and the tuner know it.

    Args:
        name: the model's name on the command line and in experiment YAML (its module's name).
        build: the builder, ``build(input_shape, num_classes, **options) -> keras.Model``.
        space: the model's own hyperparameters, in the order trials.csv and the tables show them.
        options: turns sampled values (by parameter name; inactive ones absent) into builder options.
        learning_rates: (low, high) of the searched learning rate, on a log scale.
        batch_sizes: the searched batch sizes.
        summary: one line on what the model is.
        train_defaults: training settings of this model that differ from ``TrainConfig``'s, chosen by
            measurement (README, "Training recipe"); :func:`yolol_tf.training.load_config` puts them under
            a YAML's and the command line's values.
        former_options: builder options whose default changed, each with the value runs got before it. A
            run records them in its config.yaml, and a run resumed from a config.yaml without one gets the
            former value: it goes on with the network it started with
            (:func:`yolol_tf.training.config.pin_model_options`).
    """

    name: str
    build: Callable[..., Any]
    space: tuple[Param, ...]
    options: Callable[[Mapping[str, Any]], dict[str, Any]]
    learning_rates: tuple[float, float]
    batch_sizes: tuple[int, ...]
    summary: str
    train_defaults: Mapping[str, Any] = field(default_factory=dict)
    former_options: Mapping[str, Any] = field(default_factory=dict)


def dropout_param(high: float = 0.5) -> Param:
    """The dropout rate before the logits, searched from 0 to ``high`` in steps of 0.1."""
    return Param("dropout", "float", 0.0, high, step=0.1, limits=(0.0, 0.9), help="dropout before the logits")


def flag_param(name: str, help: str) -> Param:
    """An on/off option, searched as a choice of False and True."""
    return Param(name, "choice", values=(False, True), allowed=(False, True), help=help)


def dropout_option(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{"dropout": rate}`` if ``values`` holds one (rounded: a float grid step leaves 0.30000000000000004)."""
    return {"dropout": round(float(values["dropout"]), 6)} if "dropout" in values else {}


def flag_options(values: Mapping[str, Any], *names: str) -> dict[str, Any]:
    """The on/off options among ``names`` that ``values`` holds, as booleans."""
    return {name: bool(values[name]) for name in names if name in values}


def dropout_and_flags(*names: str) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """A ``ModelSpec.options`` for a model whose search space is its dropout and the on/off ``names``."""

    def options(values: Mapping[str, Any]) -> dict[str, Any]:
        return {**dropout_option(values), **flag_options(values, *names)}

    return options
