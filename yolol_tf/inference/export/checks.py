"""How an export is judged before it counts: compared with the Keras model, refused or passed, timed.

A float32 export must give the Keras model's probabilities within its target's tolerance; a quantised
one may lose at most ``max_drop`` mAP on labelled crops; an export the runtime cannot run fails.
:func:`refusal` says why an export fails, :func:`tuned_labels` tunes a quantised export's thresholds
on its own outputs, and :func:`latency_ms` times single-image calls for the summary.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np

from yolol_tf.inference.runners import Runner
from yolol_tf.runs import Labels


@dataclass(frozen=True)
class Comparison:
    """An export's probabilities against the Keras model's on the same crops.

    Attributes:
        checked: how many crops.
        max_abs_diff: largest probability difference (infinite when the export did not run).
        keras_map: mAP of the Keras model (None without labelled crops).
        export_map: mAP of the export (NaN when it did not run).
        failure: why the runtime could not run the export, or None.
        probabilities: the export's probabilities on the crops (None when it did not run).
    """

    checked: int
    max_abs_diff: float
    keras_map: float | None
    export_map: float | None
    failure: str | None = None
    probabilities: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Refusal:
    """Why an export failed its check.

    Attributes:
        tag: goes into the refused file's name (``map-drop-0.034``).
        reason: the sentence the error gives.
    """

    tag: str
    reason: str


@dataclass(frozen=True)
class CheckCrops:
    """The crops every model an export builds is checked on, with the Keras model's probabilities.

    Attributes:
        x: the check crops.
        y: their labels, or None (random pixels: no mAP).
        keras_probs: the Keras model's probabilities on ``x``.
    """

    x: np.ndarray
    y: np.ndarray | None
    keras_probs: np.ndarray

    def compare(self, runner: Runner) -> Comparison:
        """:func:`compare` of ``runner`` on these crops."""
        return compare(runner, self.x, self.y, self.keras_probs)


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
    keras_map = None if y is None else _map(y, keras_probs)
    try:
        probs = batched(runner, x)
    except Exception as e:  # e.g. an int8 model whose requantisation XNNPACK refuses ("failed to prepare")
        message = (str(e).splitlines() or [""])[0][:300]
        return Comparison(len(x), math.inf, keras_map, math.nan, f"{type(e).__name__}: {message}")
    diff = float(np.abs(probs - keras_probs).max())
    return Comparison(len(x), diff, keras_map, None if y is None else _map(y, probs), probabilities=probs)


def refusal(comparison: Comparison, tolerance: float | None, max_drop: float) -> Refusal | None:
    """Why the export fails its check, or None when it passes.

    Args:
        comparison: what :func:`compare` measured.
        tolerance: the largest probability difference a float32 export may show; None for a quantised
            export, which is judged by its mAP drop.
        max_drop: the largest mAP loss a quantised export may show.
    """
    diff, kmap, emap = comparison.max_abs_diff, comparison.keras_map, comparison.export_map
    if comparison.failure is not None:
        return Refusal("does-not-run", f"the runtime cannot run it ({comparison.failure})")
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


def tuned_labels(labels: Labels, y: np.ndarray, probs: np.ndarray) -> Labels:
    """``labels`` with each class's threshold tuned to maximise F1 on the export's own probabilities.

    An int8 probability moves in steps of 1/256 (float16's are coarse too), so thresholds tuned on the
    Keras model's outputs may fall on the wrong side of a step; :func:`yolol_tf.metrics.tune_thresholds`
    puts each one midway between two of the export's own scores. A class without a positive crop keeps
    its threshold.

    Args:
        labels: the run's labels.
        y: the check crops' labels.
        probs: the export's probabilities on them.
    """
    from yolol_tf.metrics import tune_thresholds

    tuned = tune_thresholds(y, probs)
    kept = np.asarray(y).sum(axis=0) == 0
    thresholds = [
        float(old if keep else new) for old, new, keep in zip(labels.thresholds, tuned, kept, strict=True)
    ]
    return dataclasses.replace(labels, thresholds=thresholds)


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
