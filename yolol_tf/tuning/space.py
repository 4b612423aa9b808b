"""Search spaces for ``yolol-tf tune``: what each model's hyperparameters may be, and how a YAML narrows them.

Pure Python (no TensorFlow, no keras-tuner) so that ``yolol-tf tune --help`` can print the tables at once.
A model's space is, in this order: its learning rate, its own parameters and options
(``ModelSpec.space`` in the model's module, see :mod:`yolol_tf.models`), the training-level parameters
every model shares (:data:`COMMON`), and its batch size. :mod:`yolol_tf.tuning.search` declares these on a
``keras_tuner.HyperParameters`` and turns the sampled values into ``TrainConfig`` settings with
:func:`train_values`; the search only samples, the model comes from the same ``build_model`` and
``compile_model`` that ``yolol-tf train`` uses.

A space file (``--space FILE``) maps parameter names to one of::

    dropout: 0.2                               # fix it
    loss: [bce, asl]                           # a list: choose among these
    learning_rate: {min: 1e-4, max: 1e-2}      # a range (also log: true|false, step: 0.1)
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any

from yolol_tf.config import read_yaml
from yolol_tf.errors import UserError
from yolol_tf.models import get_spec
from yolol_tf.models.spec import Param
from yolol_tf.training.config import LOSSES

__all__ = [
    "COMMON",
    "LOSSES",
    "Param",
    "load_space",
    "model_space",
    "space_table",
    "space_to_dict",
    "train_values",
]


# Training-level parameters, the same for every model; between a model's own parameters and its batch size.
COMMON = (
    Param("loss", "choice", values=("bce", "focal", "asl"), allowed=LOSSES, help="training loss"),
    Param("focal_gamma", "float", 0.5, 4.0, step=0.5, limits=(0.0, 10.0), when=("loss", ("focal",)),
          help="focal loss focusing (loss=focal)"),
    Param("asl_gamma_neg", "float", 1.0, 6.0, step=1.0, limits=(0.0, 10.0), when=("loss", ("asl",)),
          help="ASL negative focusing (loss=asl)"),
    Param("asl_gamma_pos", "float", 0.0, 1.0, step=0.5, limits=(0.0, 10.0), when=("loss", ("asl",)),
          help="ASL positive focusing (loss=asl)"),
    Param("augment", "float", 0.0, 1.0, step=0.25, limits=(0.0, 1.0), help="augmentation strength"),
)  # fmt: skip


def model_space(model: str) -> tuple[Param, ...]:
    """The full search space of ``model`` (a name of ``yolol_tf.models.MODEL_NAMES``), before any narrowing."""
    spec = get_spec(model)
    low, high = spec.learning_rates
    return (
        Param("learning_rate", "float", low, high, log=True, limits=(1e-8, 1.0), help="peak learning rate"),
        *spec.space,
        *COMMON,
        Param("batch_size", "choice", values=tuple(spec.batch_sizes), limits=(1, 65536), help="batch size"),
    )


def space_table(model: str, space: tuple[Param, ...] | None = None) -> str:
    """A plain-text table of a model's search space (for ``--help`` and the module docs)."""
    params = model_space(model) if space is None else space
    rows = [(p.name, p.describe(), p.help) for p in params]
    width = max(len(r[0]) for r in rows)
    span = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{width}}  {b:<{span}}  {c}" for a, b, c in rows)


def _number(value: Any, key: str, source: str) -> float:
    if isinstance(value, str):
        # YAML 1.1 reads 1e-4 (no dot) as text; take it as the number it looks like.
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{source}: '{key}' needs numbers. Received: {key}={value!r}")
    return float(value)


def _check_value(param: Param, value: Any, source: str) -> Any:
    """Returns ``value`` if the parameter may take it, else raises a UserError naming it."""
    if param.allowed is not None:
        # YAML reads 0.5 and 1 alike; compare numbers by value, keep the space's type.
        for a in param.allowed:
            if a == value and isinstance(a, bool) == isinstance(value, bool):
                return a
        raise UserError(
            f"{source}: {param.name}={value!r} is not one of {', '.join(str(a) for a in param.allowed)}"
        )
    if param.pattern is not None:
        if not isinstance(value, str) or not re.fullmatch(param.pattern, value):
            raise UserError(f"{source}: {param.name}={value!r} is not like {param.values[0]!r}")
        return value
    number = _number(value, param.name, source)
    lo, hi = param.limits or (-math.inf, math.inf)
    if not lo <= number <= hi:
        raise UserError(f"{source}: {param.name}={value!r} is outside {lo:g} .. {hi:g}")
    integral = param.kind == "int" or (
        bool(param.values) and all(isinstance(v, int) and not isinstance(v, bool) for v in param.values)
    )
    if integral and number != int(number):
        raise UserError(f"{source}: {param.name} must be a whole number. Received: {param.name}={value!r}")
    return int(number) if integral else number


def _narrow(param: Param, spec: Any, source: str) -> Param:
    """One parameter as a space file sets it: fixed, a list of choices or a {min, max} range."""
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - {"min", "max", "log", "step"})
        if unknown or param.kind == "choice":
            what = f"unknown keys {unknown}" if unknown else "a range, but it is a choice (give a list)"
            raise UserError(f"{source}: '{param.name}' got {what}. Received: {param.name}={spec!r}")
        low = _check_value(param, spec.get("min", param.low), source)
        high = _check_value(param, spec.get("max", param.high), source)
        log = bool(spec.get("log", param.log))
        step = spec.get("step", None if "min" in spec or "max" in spec else param.step)
        if step is not None:
            step = _number(step, f"{param.name}.step", source)
        if low >= high:
            raise UserError(f"{source}: '{param.name}' needs min < max. Received: min={low:g}, max={high:g}")
        if log and low <= 0:
            raise UserError(f"{source}: '{param.name}' on a log scale needs min > 0. Received: min={low:g}")
        return dataclasses.replace(param, low=low, high=high, log=log, step=step if not log else None)
    if isinstance(spec, list):
        if not spec:
            raise UserError(f"{source}: '{param.name}' needs at least one value")
        values = tuple(dict.fromkeys(_check_value(param, v, source) for v in spec))
        if len(values) == 1:
            return dataclasses.replace(param, kind="fixed", values=values)
        return dataclasses.replace(param, kind="choice", values=values)
    return dataclasses.replace(param, kind="fixed", values=(_check_value(param, spec, source),))


def load_space(
    model: str, path: str | os.PathLike | None = None, *, fixed: dict[str, Any] | None = None
) -> tuple[Param, ...]:
    """The search space of ``model``, narrowed by a space file and by fixed values (CLI flags).

    Args:
        model: a name of ``yolol_tf.models.MODEL_NAMES``.
        path: a YAML space file (see the module docstring), or None.
        fixed: values that fix a parameter whatever the file says (``--batch-size``); None values are
            ignored.
    """
    params = {p.name: p for p in model_space(model)}
    specs: dict[str, Any] = {}
    if path is not None:
        specs.update(read_yaml(path))
    unknown = sorted(set(specs) - set(params))
    if unknown:
        raise UserError(
            f"{path}: unknown search parameter(s) {', '.join(unknown)} for {model}. "
            f"Known: {', '.join(params)}"
        )
    for key, value in (fixed or {}).items():
        if value is not None:
            specs[key] = value
    for name, spec in specs.items():
        params[name] = _narrow(params[name], spec, str(path) if name not in (fixed or {}) else f"--{name}")
    return tuple(params.values())


def space_to_dict(space: tuple[Param, ...]) -> dict[str, Any]:
    """The space as plain data (written to search.yaml so a resumed search can check it is the same)."""
    out = {}
    for p in space:
        d = {
            k: v
            for k, v in dataclasses.asdict(p).items()
            if k in ("kind", "low", "high", "log", "step", "values")
        }
        d["values"] = list(d["values"])
        out[p.name] = d
    return out


def train_values(model: str, values: dict[str, Any]) -> dict[str, Any]:
    """Sampled values as ``TrainConfig`` settings (model, model_options, learning_rate, loss, ...).

    Args:
        model: the model name.
        values: hyperparameter values by name; inactive conditional ones may be missing or None.
    """
    v = {k: x for k, x in values.items() if x is not None and not k.startswith("tuner/")}
    out: dict[str, Any] = {"model": model, "model_options": get_spec(model).options(v)}
    for key in ("learning_rate", *(p.name for p in COMMON)):
        if key in v:
            out[key] = v[key] if isinstance(v[key], str) else float(v[key])
    if "batch_size" in v:
        out["batch_size"] = int(v["batch_size"])
    return out
