"""Typed, frozen settings dataclasses: loaded from an experiments YAML, overridden by CLI flags.

Each stage defines its own dataclass (``TrainConfig`` in ``train.py`` and so on); this module holds the
shared machinery: reading YAML, rejecting unknown keys by name, and writing the resolved config.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from yolol_tf.errors import UserError

T = TypeVar("T")


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a YAML mapping, turning a missing file or a syntax error into a ``UserError``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Config file not found: {path}")
    try:
        with path.open(encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise UserError(f"{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of settings. Received: {type(data).__name__}")
    return data


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Converts YAML lists to tuples where the field is a tuple; checks simple scalar types."""
    origin = typing.get_origin(hint)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if hint in (int, float) and isinstance(value, bool):
        raise UserError(f"{source}: '{key}' must be a number. Received: {key}={value!r}")
    if hint is float and isinstance(value, int):
        return float(value)
    if hint in (int, float, str, bool) and not isinstance(value, hint):
        raise UserError(f"{source}: '{key}' must be {hint.__name__}. Received: {key}={value!r}")
    return value


def from_dict(cls: type[T], values: dict[str, Any], source: str = "config") -> T:
    """Builds the dataclass ``cls`` from ``values``, naming any unknown key.

    Args:
        cls: a dataclass type whose fields all have defaults.
        values: settings by field name; ``None`` values are ignored so CLI flags left unset keep the
            YAML's or the default.
        source: where the values came from, for error messages (a file path or "--flags").
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(
            f"{source}: unknown setting {unknown[0]!r}. Known settings: {', '.join(sorted(fields))}"
        )
    kwargs = {k: _coerce(v, hints[k], k, source) for k, v in values.items() if v is not None}
    return cls(**kwargs)


def resolve(
    cls: type[T],
    config_path: str | os.PathLike | None,
    overrides: dict[str, Any],
    defaults: dict[str, Any] | None = None,
) -> T:
    """The class's defaults, then ``defaults``, then the YAML file (if any), then non-None CLI overrides."""
    values: dict[str, Any] = dict(defaults or {})
    if config_path is not None:
        values.update(read_yaml(config_path))
        from_dict(cls, values, source=str(config_path))  # name a bad key before flags mask it
    values.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(cls, values, source=str(config_path) if config_path else "options")


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass as plain YAML-friendly values (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(config).items()}


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file and a rename, so readers never see half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~current_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_yaml(path: str | os.PathLike, config: Any) -> None:
    """Writes a dataclass (or mapping) as YAML, atomically."""
    data = to_dict(config) if dataclasses.is_dataclass(config) else config
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
