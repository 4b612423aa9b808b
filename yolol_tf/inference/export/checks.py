"""How an export is judged before it counts: compared with the Keras model, refused or passed, timed.

A float32 export must give the Keras model's probabilities within its target's tolerance; a quantised
one may lose at most ``max_drop`` mAP on labelled crops. :func:`refusal` says why an export fails, and
:func:`latency_ms` times single-image calls for the summary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from yolol_tf.inference.runners import Runner


@dataclass(frozen=True)
class Comparison:
    """An export's probabilities against the Keras model's on the same crops.

    Attributes:
        checked: how many crops.
        max_abs_diff: largest probability difference.
        keras_map: mAP of the Keras model (None without labelled crops).
        export_map: mAP of the export.
    """

    checked: int
    max_abs_diff: float
    keras_map: float | None
    export_map: float | None


@dataclass(frozen=True)
class Refusal:
    """Why an export failed its check.

    Attributes:
        tag: goes into the refused file's name (``map-drop-0.034``).
        reason: the sentence the error gives.
    """

    tag: str
    reason: str


def batched(runner: Runner, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """The runner's probabilities on ``x``, ``batch`` crops per call."""
    return np.concatenate([runner(x[i : i + batch]) for i in range(0, len(x), batch)])


def _map(y: np.ndarray, p: np.ndarray) -> float:
    from yolol_tf.metrics import mean_average_precision

    return float(mean_average_precision(y, p))


def compare(runner: Runner, x: np.ndarray, y: np.ndarray | None, keras_probs: np.ndarray) -> Comparison:
    """Runs the export on the check crops and compares it with the Keras model's probabilities.

    Args:
        runner: the export.
        x: check crops.
        y: their labels, or None (random pixels: no mAP).
        keras_probs: the Keras model's probabilities on ``x``.
    """
    probs = batched(runner, x)
    diff = float(np.abs(probs - keras_probs).max())
    if y is None:
        return Comparison(len(x), diff, None, None)
    return Comparison(len(x), diff, _map(y, keras_probs), _map(y, probs))


def refusal(comparison: Comparison, tolerance: float | None, max_drop: float) -> Refusal | None:
    """Why the export fails its check, or None when it passes.

    Args:
        comparison: what :func:`compare` measured.
        tolerance: the largest probability difference a float32 export may show; None for a quantised
            export, which is judged by its mAP drop.
        max_drop: the largest mAP loss a quantised export may show.
    """
    diff, kmap, emap = comparison.max_abs_diff, comparison.keras_map, comparison.export_map
    if tolerance is not None:
        if diff > tolerance:
            return Refusal(
                f"max-diff-{diff:.1e}",
                f"its probabilities differ from the Keras model's by {diff:.2e} (> {tolerance:g})",
            )
    elif kmap is not None and kmap - emap > max_drop:
        return Refusal(
            f"map-drop-{kmap - emap:.3f}",
            f"it loses {kmap - emap:.4f} mAP ({kmap:.4f} -> {emap:.4f}; --max-drop {max_drop})",
        )
    return None


def latency_ms(runner: Runner, image: np.ndarray, runs: int = 50) -> float:
    """Median wall time of one single-image call, after warm-up calls.

    Args:
        runner: the model to time.
        image: one crop.
        runs: calls the median is taken over.
    """
    x = image[None]
    for _ in range(3):
        runner(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runner(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)
