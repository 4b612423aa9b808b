"""Pictures of a training run (PNG, matplotlib's Agg backend): curves, per-class F1, validation crops.

A user looks at these rather than reading ``history.csv`` and ``metrics.json``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def plot_history(history: pd.DataFrame | str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Loss curves (``loss.png``) and metric curves (``metrics.png``), training and validation.

    Args:
        history: the run's ``history.csv`` or its DataFrame (one row per epoch, Keras log names).
        out_dir: folder for the PNGs.
    """
    df = history if isinstance(history, pd.DataFrame) else pd.read_csv(history)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    epochs = df["epoch"] + 1 if "epoch" in df else pd.Series(range(1, len(df) + 1))
    names = [c for c in df.columns if c not in ("epoch", "learning_rate", "lr") and not c.startswith("val_")]
    names += [c[4:] for c in df.columns if c.startswith("val_") and c[4:] not in df.columns]
    written = []

    def curves(ax: plt.Axes, name: str) -> None:
        for column, style in ((name, "-"), (f"val_{name}", "--")):
            if column in df:
                ax.plot(epochs, df[column], style, marker="o", markersize=3, label=column)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)

    fig, ax = plt.subplots(figsize=(6, 4))
    curves(ax, "loss")
    written.append(_save(fig, out_dir / "loss.png"))

    metrics = [n for n in names if n != "loss"]
    if metrics:
        cols = min(3, len(metrics))
        rows = math.ceil(len(metrics) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.5 * rows), squeeze=False)
        for ax, name in zip(axes.flat, metrics, strict=False):  # more axes than metrics
            curves(ax, name)
        for ax in list(axes.flat)[len(metrics) :]:
            ax.axis("off")
        written.append(_save(fig, out_dir / "metrics.png"))
    return written


def plot_per_class_f1(per_class: Sequence[dict], path: str | os.PathLike) -> Path:
    """A horizontal bar chart of each class's F1 (and AP) on the validation split.

    Args:
        per_class: ``metrics.report(...)["per_class"]``: dicts with name, f1, ap, support.
        path: the PNG file.
    """
    names = [f"{c['name']} ({c['support']})" for c in per_class]
    f1 = [c["f1"] for c in per_class]
    ap = [0.0 if c["ap"] is None or math.isnan(c["ap"]) else c["ap"] for c in per_class]
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.28 * len(names) + 1)))
    ax.barh(y - 0.2, f1, height=0.4, label="F1 (tuned threshold)")
    ax.barh(y + 0.2, ap, height=0.4, label="average precision", alpha=0.6)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("validation score (support in brackets)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, Path(path))


def plot_prediction_grid(
    images: np.ndarray,
    y_true: np.ndarray,
    y_prob: np.ndarray,
    thresholds: Sequence[float] | np.ndarray,
    names: Sequence[str],
    path: str | os.PathLike,
    *,
    max_images: int = 16,
    single_label: bool = False,
) -> Path:
    """A grid of crops titled with their true labels and predictions (green: right, red: wrong).

    Args:
        images: uint8 [N, H, W, C] crops (C = 1 or 3).
        y_true: multi-hot truth [N, classes].
        y_prob: probabilities [N, classes].
        thresholds: per-class decision thresholds (ignored when ``single_label``: the top class wins).
        names: class names.
        path: the PNG file.
        max_images: how many crops to show.
        single_label: predict the single most likely class.
    """
    n = min(max_images, len(images))
    cols = min(4, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.9 * rows), squeeze=False)
    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (len(names),))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        image = np.asarray(images[i])
        ax.imshow(
            image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None
        )
        truth = set(np.flatnonzero(y_true[i] > 0.5))
        if single_label:
            pred = {int(np.argmax(y_prob[i]))}
        else:
            pred = set(np.flatnonzero(y_prob[i] >= thresholds))
        ax.set_title(
            f"true: {_label_text(truth, names)}\npred: {_label_text(pred, names)}",
            fontsize=7,
            color="green" if truth == pred else "red",
        )
    return _save(fig, Path(path))


def _label_text(ids: set, names: Sequence[str], limit: int = 3) -> str:
    labels = [str(names[i]) for i in sorted(ids)]
    if not labels:
        return "-"
    more = f" +{len(labels) - limit}" if len(labels) > limit else ""
    return ", ".join(labels[:limit]) + more


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
