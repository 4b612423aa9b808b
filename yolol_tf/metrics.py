"""Multi-label classification metrics in plain numpy, with scikit-learn's exact definitions.

Every figure here equals its scikit-learn counterpart on the same arrays (``tests/test_metrics.py``
checks each one), without making scikit-learn a dependency of the package:

- :func:`average_precision`: ``average_precision_score`` per class (the step-wise sum
  ``sum_n (R_n - R_{n-1}) P_n`` over distinct score thresholds, tied scores forming one step).
- :func:`report`: ``f1_score``, ``precision_score`` and ``recall_score`` (micro, macro, samples) with
  ``zero_division=0``, ``hamming_loss``, ``accuracy_score`` (exact match on multi-hot rows, argmax
  accuracy for single-label data).

One deliberate difference: a class with no positive sample has an undefined average precision, so it is
NaN here and left out of the mean (scikit-learn scores it 0 with a warning, which drags mAP down for a
class the split simply lacks).

Predictions are ``y_prob >= threshold``, per class.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_THRESHOLD = 0.5


def _as_2d(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Checks shapes and returns (bool [N, C], float64 [N, C]); 1-D inputs are one class."""
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.ndim == 1:
        y_true = y_true[:, None]
    if y_score.ndim == 1:
        y_score = y_score[:, None]
    if y_true.shape != y_score.shape or y_true.ndim != 2:
        raise ValueError(
            f"y_true and y_score must both be [samples, classes]. "
            f"Received: y_true.shape={y_true.shape}, y_score.shape={y_score.shape}"
        )
    return y_true > 0.5, y_score


def _ranked_counts(truth: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and predicted positives when cutting after each distinct score, highest first.

    Returns (distinct scores descending, true positives, predicted positives), one entry per cut; tied
    scores fall on the same side of every cut, as in scikit-learn's ``_binary_clf_curve``.
    """
    order = np.argsort(-score, kind="mergesort")
    score, truth = score[order], truth[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(score)), score.size - 1]
    tps = np.cumsum(truth)[last_of_group].astype(np.float64)
    return score[last_of_group], tps, last_of_group + 1.0


def average_precision(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """Average precision per class, as scikit-learn's ``average_precision_score(average=None)``.

    Args:
        y_true: multi-hot (or one-hot) truth, [samples, classes].
        y_score: scores (probabilities or logits; only their order matters), [samples, classes].

    Returns:
        float64 [classes]; NaN for a class with no positive sample.

    Example:
        >>> average_precision(np.array([[1], [0], [1]]), np.array([[0.9], [0.8], [0.1]]))
        array([0.83333333])
    """
    truth, score = _as_2d(y_true, y_score)
    out = np.full(truth.shape[1], np.nan)
    for c in range(truth.shape[1]):
        positives = truth[:, c].sum()
        if positives == 0:
            continue
        _, tps, predicted = _ranked_counts(truth[:, c], score[:, c])
        recall_steps = np.diff(np.r_[0.0, tps / positives])
        out[c] = float(np.sum(recall_steps * (tps / predicted)))
    return out


def mean_average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """mAP: the mean of :func:`average_precision` over classes that have positives (NaN if none do)."""
    ap = average_precision(y_true, y_score)
    return float(np.nanmean(ap)) if np.any(~np.isnan(ap)) else float("nan")


def tune_thresholds(
    y_true: np.ndarray, y_prob: np.ndarray, *, default: float = DEFAULT_THRESHOLD
) -> np.ndarray:
    """Per class, the probability threshold that maximises F1 on these (validation) predictions.

    Candidates are the midpoints between consecutive distinct scores, plus half the lowest score (every
    sample positive); a threshold never sits on a score, so float noise of another run of the same model
    (batch size, device) cannot flip a decision. Among equally good thresholds the highest wins: fewer
    false alarms at the same F1.

    Args:
        y_true: multi-hot truth, [samples, classes].
        y_prob: predicted probabilities, [samples, classes].
        default: the threshold of a class with no positive sample, where F1 cannot choose one.

    Returns:
        float64 [classes]; predict class c when ``y_prob[:, c] >= thresholds[c]``.
    """
    truth, score = _as_2d(y_true, y_prob)
    out = np.full(truth.shape[1], float(default))
    for c in range(truth.shape[1]):
        positives = truth[:, c].sum()
        if positives == 0:
            continue
        distinct, tps, predicted = _ranked_counts(truth[:, c], score[:, c])
        # Cutting after group k predicts the k+1 highest distinct scores: F1 = 2TP / (P + predicted).
        best = int(np.argmax(2.0 * tps / (positives + predicted)))
        below = distinct[best + 1] if best + 1 < distinct.size else min(distinct[-1], 0.0)
        out[c] = (distinct[best] + below) / 2.0
    return out


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's ``zero_division=0``)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator != 0)


def binarize(y_prob: np.ndarray, thresholds: float | Sequence[float] | np.ndarray) -> np.ndarray:
    """Multi-hot predictions: ``y_prob >= thresholds`` (one threshold, or one per class)."""
    y_prob = np.asarray(y_prob, dtype=np.float64)
    return y_prob >= np.broadcast_to(np.asarray(thresholds, dtype=np.float64), y_prob.shape[-1:])


def report(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    thresholds: float | Sequence[float] | np.ndarray,
    names: Sequence[str] | None = None,
    *,
    single_label: bool = False,
) -> dict:
    """Every evaluation figure at the given per-class thresholds.

    Args:
        y_true: multi-hot truth, [samples, classes].
        y_prob: predicted probabilities, [samples, classes].
        thresholds: one threshold for all classes, or one per class.
        names: class names (default ``class_0``...).
        single_label: the data has exactly one class per sample (softmax model); adds ``accuracy``, the
            share of samples whose highest-probability class is the true one.

    Returns:
        A JSON-ready dict: ``samples``, ``classes``, ``map``, ``f1_micro``, ``f1_macro``, ``f1_samples``,
        ``precision_micro``, ``precision_macro``, ``recall_micro``, ``recall_macro``, ``hamming_loss``,
        ``exact_match``, ``support`` (positive labels in all), ``accuracy`` (single-label only), and
        ``per_class``: a list of {name, ap, precision, recall, f1, support, threshold}. ``map`` and ``ap``
        are NaN where undefined (no positives).
    """
    truth, prob = _as_2d(y_true, y_prob)
    num_classes = truth.shape[1]
    names = list(names) if names is not None else [f"class_{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} names for {num_classes} classes")
    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (num_classes,))
    pred = binarize(prob, thresholds)

    tp = (truth & pred).sum(axis=0)
    true_count = truth.sum(axis=0)
    pred_count = pred.sum(axis=0)
    precision = _divide(tp, pred_count)
    recall = _divide(tp, true_count)
    f1 = _divide(2 * tp, true_count + pred_count)  # = 2PR/(P+R), defined where P or R is undefined

    sample_tp = (truth & pred).sum(axis=1)
    sample_f1 = _divide(2 * sample_tp, truth.sum(axis=1) + pred.sum(axis=1))
    ap = average_precision(truth, prob)

    result = {
        "samples": int(truth.shape[0]),
        "classes": int(num_classes),
        "map": float(np.nanmean(ap)) if np.any(~np.isnan(ap)) else float("nan"),
        "f1_micro": float(_divide(2 * tp.sum(), true_count.sum() + pred_count.sum())),
        "f1_macro": float(f1.mean()),
        "f1_samples": float(sample_f1.mean()),
        "precision_micro": float(_divide(tp.sum(), pred_count.sum())),
        "precision_macro": float(precision.mean()),
        "recall_micro": float(_divide(tp.sum(), true_count.sum())),
        "recall_macro": float(recall.mean()),
        "hamming_loss": float(np.mean(truth != pred)),
        "exact_match": float(np.mean(np.all(truth == pred, axis=1))),
        "support": int(true_count.sum()),
    }
    if single_label:
        result["accuracy"] = float(np.mean(np.argmax(prob, axis=1) == np.argmax(truth, axis=1)))
    result["per_class"] = [
        {
            "name": str(names[c]),
            "ap": float(ap[c]),
            "precision": float(precision[c]),
            "recall": float(recall[c]),
            "f1": float(f1[c]),
            "support": int(true_count[c]),
            "threshold": float(thresholds[c]),
        }
        for c in range(num_classes)
    ]
    return result


def json_safe(value: Any) -> Any:
    """A copy of a :func:`report` (or any nest of dicts and lists) with NaN and inf as None.

    JSON has no NaN: ``json.dumps`` would write a bare ``NaN`` that strict parsers reject, so write
    ``json.dumps(json_safe(report(...)))``; the undefined AP of a class without positives becomes null.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
