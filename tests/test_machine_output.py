"""With ``--format json`` or ``csv``, standard output holds that document alone; messages go to stderr."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from yolol_tf import cli


@pytest.fixture(scope="module")
def yolo_run(tmp_path_factory: pytest.TempPathFactory, make_yolo_dataset, tiny_train_config) -> Path:
    """A tiny run trained on a YOLO dataset, so evaluating it prepares (or reuses) a store and says so."""
    from yolol_tf.training import train

    root = tmp_path_factory.mktemp("machine")
    data = make_yolo_dataset(root / "ds", "ultralytics")
    return train(tiny_train_config(data, root / "run", size=32, batch_size=4), verbose=0)


def _run(capfd: pytest.CaptureFixture, *args: str) -> tuple[str, str]:
    assert cli.main(list(args)) == 0
    captured = capfd.readouterr()
    return captured.out, captured.err


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_json_output_is_the_only_thing_on_stdout(yolo_run: Path, capfd, command: str) -> None:
    images = [str(p) for p in sorted((yolo_run.parent / "ds").rglob("*.jpg"))[:2]]
    args = [command, str(yolo_run), *(images if command == "predict" else []), "--format", "json"]
    out, err = _run(capfd, *args)
    document = json.loads(out)  # fails on any message printed before or after the document
    assert document and isinstance(document, (dict, list))
    if command == "evaluate":
        assert "Reusing the store" in err, "the store message goes to stderr"


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_csv_output_is_the_only_thing_on_stdout(yolo_run: Path, capfd, command: str) -> None:
    images = [str(p) for p in sorted((yolo_run.parent / "ds").rglob("*.jpg"))[:2]]
    args = [command, str(yolo_run), *(images if command == "predict" else []), "--format", "csv"]
    out, _ = _run(capfd, *args)
    rows = list(csv.reader(io.StringIO(out)))
    header = rows[0]
    assert header[0] in ("class", "image") and all(len(row) == len(header) for row in rows[1:])
    assert len(rows) > 1
