"""yolol_tf.metrics equals scikit-learn's definitions on random and edge-case predictions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from yolol_tf import metrics


def _random_case(seed: int, n: int = 60, c: int = 5, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = (rng.random((n, c)) < 0.3).astype(np.float32)
    y_true[0] = 1  # every class has a positive, so sklearn's macro AP is defined the same way
    y_prob = np.clip(0.4 * y_true + 0.6 * rng.random((n, c)), 0, 1)
    if ties:
        y_prob = np.round(y_prob, 1)  # many equal scores, positives and negatives among them
    return y_true, y_prob


def _edge_case() -> tuple[np.ndarray, np.ndarray]:
    """Columns: all-negative, all-positive, perfect, inverted, all scores tied, mixed with ties."""
    y = np.array(
        [
            [0, 1, 1, 0, 1, 1],
            [0, 1, 0, 1, 0, 0],
            [0, 1, 1, 0, 1, 1],
            [0, 1, 0, 1, 0, 0],
            [0, 1, 0, 1, 1, 1],
            [0, 1, 1, 0, 0, 0],
        ],
        dtype=np.float32,
    )
    p = np.array(
        [
            [0.1, 0.9, 0.9, 0.1, 0.5, 0.7],
            [0.7, 0.2, 0.2, 0.8, 0.5, 0.7],
            [0.2, 0.8, 0.8, 0.2, 0.5, 0.3],
            [0.3, 0.7, 0.1, 0.9, 0.5, 0.3],
            [0.9, 0.6, 0.3, 0.7, 0.5, 0.5],
            [0.4, 0.5, 0.7, 0.3, 0.5, 0.5],
        ]
    )
    return y, p


def _sklearn_figures(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    t, p = y_true.astype(int), y_pred.astype(int)
    figures = {"hamming_loss": skm.hamming_loss(t, p), "exact_match": skm.accuracy_score(t, p)}
    for avg in ("micro", "macro", "samples"):
        figures[f"f1_{avg}"] = skm.f1_score(t, p, average=avg, zero_division=0)
    for avg in ("micro", "macro"):
        figures[f"precision_{avg}"] = skm.precision_score(t, p, average=avg, zero_division=0)
        figures[f"recall_{avg}"] = skm.recall_score(t, p, average=avg, zero_division=0)
    return figures


CASES = [_random_case(0), _random_case(1, n=7, c=3), _random_case(2, ties=True), _edge_case()]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_average_precision_equals_sklearn_per_class(case: int) -> None:
    y_true, y_prob = CASES[case]
    ours = metrics.average_precision(y_true, y_prob)
    for c in range(y_true.shape[1]):
        if y_true[:, c].sum() == 0:
            assert np.isnan(ours[c]), "a class with no positives has no average precision"
            continue
        expected = skm.average_precision_score(y_true[:, c], y_prob[:, c])
        assert ours[c] == pytest.approx(expected, abs=1e-12), f"class {c}"


@pytest.mark.parametrize("case", range(3))
def test_map_equals_sklearn_macro_when_every_class_has_positives(case: int) -> None:
    y_true, y_prob = CASES[case]
    expected = skm.average_precision_score(y_true, y_prob, average="macro")
    assert metrics.mean_average_precision(y_true, y_prob) == pytest.approx(expected, abs=1e-12)


def test_map_skips_a_class_without_positives() -> None:
    y_true, y_prob = _edge_case()
    with_positives = y_true.sum(axis=0) > 0
    expected = skm.average_precision_score(
        y_true[:, with_positives], y_prob[:, with_positives], average="macro"
    )
    assert metrics.mean_average_precision(y_true, y_prob) == pytest.approx(expected, abs=1e-12)
    assert metrics.average_precision(y_true[:, [2]], y_prob[:, [2]])[0] == 1.0  # perfect scores
    assert np.isnan(metrics.mean_average_precision(np.zeros((3, 2)), np.ones((3, 2))))


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("threshold", [0.5, 0.3, "per-class"])
def test_report_equals_sklearn(case: int, threshold: object) -> None:
    y_true, y_prob = CASES[case]
    c = y_true.shape[1]
    thresholds = np.linspace(0.2, 0.8, c) if threshold == "per-class" else np.full(c, threshold)
    rep = metrics.report(y_true, y_prob, thresholds, [f"n{i}" for i in range(c)])
    y_pred = y_prob >= thresholds
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = _sklearn_figures(y_true, y_pred)
        per_class = skm.precision_recall_fscore_support(
            y_true.astype(int), y_pred.astype(int), average=None, zero_division=0
        )
    for key, value in expected.items():
        assert rep[key] == pytest.approx(value, abs=1e-12), key
    assert rep["support"] == int(y_true.sum())
    assert rep["samples"] == len(y_true)
    assert [row["name"] for row in rep["per_class"]] == [f"n{i}" for i in range(c)]
    for i, row in enumerate(rep["per_class"]):
        assert row["precision"] == pytest.approx(per_class[0][i], abs=1e-12)
        assert row["recall"] == pytest.approx(per_class[1][i], abs=1e-12)
        assert row["f1"] == pytest.approx(per_class[2][i], abs=1e-12)
        assert row["support"] == per_class[3][i]
        assert row["threshold"] == pytest.approx(thresholds[i])


def test_report_nothing_predicted_and_nothing_true_scores_zero_not_nan() -> None:
    rep = metrics.report(np.zeros((4, 3)), np.zeros((4, 3)), 0.5)
    for key in ("f1_micro", "f1_macro", "f1_samples", "precision_micro", "recall_macro"):
        assert rep[key] == 0.0, key  # sklearn zero_division=0
    assert rep["hamming_loss"] == 0.0
    assert rep["exact_match"] == 1.0
    assert np.isnan(rep["map"])


def test_single_label_report_has_argmax_accuracy() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, size=50)
    y_true = np.eye(4)[labels]
    logits = rng.normal(size=(50, 4)) + 2 * y_true
    y_prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    rep = metrics.report(y_true, y_prob, 0.5, single_label=True)
    assert rep["accuracy"] == pytest.approx(skm.accuracy_score(labels, y_prob.argmax(axis=1)))
    assert "accuracy" not in metrics.report(y_true, y_prob, 0.5)


def _f1(truth: np.ndarray, pred: np.ndarray) -> float:
    tp = np.sum(truth & pred)
    denom = truth.sum() + pred.sum()
    return 2 * tp / denom if denom else 0.0


@pytest.mark.parametrize("case", range(len(CASES)))
def test_tuned_thresholds_maximise_f1(case: int) -> None:
    y_true, y_prob = CASES[case]
    tuned = metrics.tune_thresholds(y_true, y_prob)
    grid = np.r_[np.linspace(0, 1, 1001), np.unique(y_prob)]
    for c in range(y_true.shape[1]):
        truth = y_true[:, c] > 0
        if not truth.any():
            assert tuned[c] == 0.5, "a class without positives keeps the default"
            continue
        best = max(_f1(truth, y_prob[:, c] >= t) for t in grid)
        got = _f1(truth, y_prob[:, c] >= tuned[c])
        assert got == pytest.approx(best, abs=1e-12), f"class {c}"
        assert skm.f1_score(truth, y_prob[:, c] >= tuned[c]) == pytest.approx(got)


def test_tuned_threshold_sits_between_scores() -> None:
    y_true = np.array([[1], [1], [0], [0]])
    y_prob = np.array([[0.9], [0.6], [0.4], [0.1]])
    assert metrics.tune_thresholds(y_true, y_prob)[0] == pytest.approx(0.5)
    assert metrics.tune_thresholds(np.zeros((4, 1)), y_prob, default=0.3)[0] == 0.3
    # Best to call every sample positive: the threshold sits below the lowest score, not on it.
    everything = metrics.tune_thresholds(np.array([[1], [0], [1], [1]]), y_prob)[0]
    assert 0 < everything < 0.1


def test_json_safe_report_is_strict_json() -> None:
    import json

    rep = metrics.report(np.array([[1, 0], [0, 0]]), np.array([[0.9, 0.2], [0.1, 0.3]]), 0.5)
    text = json.dumps(metrics.json_safe(rep), allow_nan=False)
    assert json.loads(text)["per_class"][1]["ap"] is None
