"""Class names with separators or quotes survive predict's CSV and JSON: a list, not a joined string."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from yolol_tf.inference.predict import Prediction, format_predictions

NAMES = ["red; ripe", 'say "hi", ok', "plain"]


def _prediction() -> Prediction:
    probabilities = dict(zip(NAMES, (0.9, 0.8, 0.1), strict=True))
    return Prediction(Path("a.jpg"), None, None, [(NAMES[0], 0.9), (NAMES[1], 0.8)], probabilities)


def test_csv_labels_column_is_a_json_list_the_csv_quotes() -> None:
    rows = list(csv.DictReader(io.StringIO(format_predictions([_prediction()], "csv"))))
    assert json.loads(rows[0]["labels"]) == NAMES[:2]
    assert list(rows[0])[-3:] == NAMES, "one probability column per class, names intact"


def test_json_labels_are_a_list_of_names_and_probabilities() -> None:
    (row,) = json.loads(format_predictions([_prediction()], "json"))
    assert [label["name"] for label in row["labels"]] == NAMES[:2]
