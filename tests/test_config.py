"""The shared settings machinery: YAML, unknown keys named, atomic writes readable like any file."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import pytest

from yolol_tf.config import atomic_write_text, resolve
from yolol_tf.errors import UserError


@dataclasses.dataclass(frozen=True)
class Settings:
    epochs: int = 10
    rate: float = 0.1
    widths: tuple[int, ...] = (8, 16)


def test_yaml_then_flags_override_defaults(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("epochs: 3\nwidths: [1, 2]\nrate: 1\n")
    settings = resolve(Settings, path, {"epochs": 5, "rate": None})
    assert settings == Settings(epochs=5, rate=1.0, widths=(1, 2))


def test_unknown_key_and_bad_type_are_named(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("epochz: 3\n")
    with pytest.raises(UserError, match="unknown setting 'epochz'"):
        resolve(Settings, path, {})
    path.write_text("epochs: three\n")
    with pytest.raises(UserError, match="'epochs' must be int. Received: epochs='three'"):
        resolve(Settings, path, {})
    path.write_text("epochs: [3\n")
    with pytest.raises(UserError, match=r"exp.yaml:\d+: not valid YAML"):
        resolve(Settings, path, {})


def test_atomic_write_leaves_no_temp_file_and_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        target = tmp_path / "labels.json"
        atomic_write_text(target, "{}\n")
    finally:
        os.umask(old)
    assert target.read_text() == "{}\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["labels.json"]
