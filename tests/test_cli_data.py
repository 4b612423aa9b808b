"""`yolol-tf prepare` and `yolol-tf demo-data`: help, output, and exit status 2 for a user's mistake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from yolol_tf.cli import main
from yolol_tf.data import demo

SMALL = {"train": 6, "val": 3, "test": 3}


def run(args: list[str]) -> int:
    """Runs the CLI in-process as the console script does; returns its exit status."""
    try:
        return main(args)
    except SystemExit as e:  # Typer exits on its own after a command or a usage error
        return int(e.code or 0)


def test_help_lists_data_commands_with_examples() -> None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run(
        [sys.executable, "-m", "yolol_tf", "--help"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0
    assert "prepare" in out.stdout and "demo-data" in out.stdout
    for command in ("prepare", "demo-data"):
        out = subprocess.run(
            [sys.executable, "-m", "yolol_tf", command, "--help"], capture_output=True, text=True, env=env
        )
        assert out.returncode == 0 and "Example: yolol-tf" in out.stdout, out.stdout
    assert "--min-visible" in out.stdout or command == "demo-data"


def test_data_modules_print_only_to_stderr() -> None:
    # stdout is for machine-readable output (--format json, csv): every message of the data layer goes to
    # stderr, so that `yolol-tf ... > out.json` gets only the output.
    import ast

    for path in sorted((Path(demo.__file__).parent).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                assert any(k.arg == "file" for k in node.keywords), (
                    f"{path.name}:{node.lineno} prints to stdout"
                )
            if isinstance(node, ast.Attribute) and node.attr == "stdout":
                raise AssertionError(f"{path.name}:{node.lineno} uses sys.stdout")


def test_prepare_force_converts_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(demo, "SPLIT_SIZES", SMALL)
    data = demo.demo_data(tmp_path / "demo", seed=1)
    args = ["prepare", str(data), "--out", str(tmp_path / "store"), "--size", "16", "--workers", "1"]
    assert run(args) == 0 and run(args) == 0
    assert "Reusing" in capsys.readouterr().err
    assert run([*args, "--force"]) == 0
    captured = capsys.readouterr()
    assert f"Rebuilding the store {tmp_path / 'store'}: --force" in captured.err and captured.out == ""


def test_demo_data_then_prepare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(demo, "SPLIT_SIZES", SMALL)
    assert run(["demo-data", str(tmp_path / "demo"), "--seed", "3"]) == 0
    printed = capsys.readouterr()
    assert "data.yaml" in printed.err and printed.out == ""  # messages go to stderr
    assert len(list((tmp_path / "demo" / "images" / "train").glob("*.jpg"))) == SMALL["train"]
    code = run(["prepare", str(tmp_path / "demo" / "data.yaml"), "--out", str(tmp_path / "store"),
                "--size", "16", "--workers", "1"])  # fmt: skip
    captured = capsys.readouterr()
    out = captured.err
    assert code == 0, out
    assert captured.out == ""  # stdout is only for machine-readable output
    assert (tmp_path / "store" / "dataset.json").is_file()
    assert f"Store: {tmp_path / 'store'}" in out and "train" in out and "10 classes" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prepare", "{tmp}/missing/data.yaml", "--out", "{tmp}/store"], "missing"),
        (["prepare", "{tmp}", "--mode", "boxes"], "boxes"),
        (["prepare", "{tmp}", "--size", "abc"], "--size"),
        (["prepare", "{tmp}", "--size", "3"], "--size must be"),
        (["demo-data"], "Missing argument"),
    ],
)
def test_user_mistakes_exit_2_without_traceback(
    tmp_path: Path, capsys, args: list[str], message: str
) -> None:
    code = run([a.format(tmp=tmp_path) for a in args])
    captured = capsys.readouterr()
    assert code == 2
    assert message in captured.err
    assert "Traceback" not in captured.err + captured.out


def test_an_unwritable_output_is_one_line_not_a_traceback(tmp_path: Path, capsys) -> None:
    from yolol_tf.cli import main

    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    assert main(["demo-data", str(blocker / "demo")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "afile" in err and "Traceback" not in err
