"""The end of a training run: thresholds tuned on validation, labels, figures, plots and metrics.json.

``metrics.json`` is written last: it marks the run finished (see :mod:`yolol_tf.runs`).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from yolol_tf import config as config_lib
from yolol_tf import metrics, plots, runs
from yolol_tf.training.config import TrainConfig


def write_report(
    config: TrainConfig,
    source: Any,
    run_dir: Path,
    activation: str,
    val_ds: Any,
    best: tuple[float | None, int | None],
    seconds: float,
    setup: Any,
) -> Path:
    """Tunes thresholds on validation, writes labels, plots and (last) metrics.json; returns the run folder.

    Args:
        config: the run's settings.
        source: the opened data.
        run_dir: the run folder.
        activation: "sigmoid" or "softmax".
        val_ds: the validation split, batched.
        best: the monitored value and 0-based epoch that best.keras holds (see ``runs.read_best``).
        seconds: wall time of the fit.
        setup: the device settings used.
    """
    import numpy as np

    from yolol_tf.models import load_model
    from yolol_tf.training.callbacks import predict_probs

    info = source.info
    best_path = run_dir / runs.BEST_MODEL
    model = load_model(best_path if best_path.is_file() else run_dir / runs.LAST_MODEL)
    if not best_path.is_file():
        shutil.copyfile(run_dir / runs.LAST_MODEL, best_path)
    single = activation == "softmax"
    y_true, y_prob = predict_probs(model, val_ds, activation)
    thresholds = metrics.tune_thresholds(y_true, y_prob)
    runs.Labels(list(info.names), [float(t) for t in thresholds], activation, tuple(info.image_shape)).save(
        run_dir / runs.LABELS_FILE
    )
    results: dict[str, Any] = {
        "val": metrics.report(y_true, y_prob, thresholds, info.names, single_label=single)
    }
    if "test" in source.splits and info.counts.get("test"):
        test_true, test_prob = predict_probs(model, source.dataset("test", config.batch_size), activation)
        results["test"] = metrics.report(test_true, test_prob, thresholds, info.names, single_label=single)

    plots_dir = run_dir / "plots"
    plots.plot_history(run_dir / runs.HISTORY_FILE, plots_dir)
    plots.plot_per_class_f1(results["val"]["per_class"], plots_dir / "per_class_f1.png")
    images, labels = next(iter(source.dataset("val", 16)))
    grid_prob = y_prob[: len(images)]
    plots.plot_prediction_grid(
        np.asarray(images),
        np.asarray(labels),
        grid_prob,
        thresholds,
        info.names,
        plots_dir / "val_predictions.png",
        single_label=single,
    )

    summary = {
        "model": config.model,
        "monitor": config.monitor,
        "best_epoch": None if best[1] is None else int(best[1]) + 1,
        "best_value": best[0],
        "train_seconds": round(seconds, 1),
        "device": setup.describe(),
        "precision": setup.policy,
        "bf16_speedup": getattr(setup, "bf16_speedup", None),
        **results,
    }
    config_lib.atomic_write_text(
        run_dir / runs.FINISHED_MARKER, json.dumps(metrics.json_safe(summary), indent=2) + "\n"
    )
    print(quality_line(results, run_dir), file=sys.stderr)
    return run_dir


def quality_line(results: dict, run_dir: Path) -> str:
    parts = []
    for split in ("val", "test"):
        if split in results:
            r = results[split]
            line = f"{split} mAP {r['map']:.3f}, macro F1 {r['f1_macro']:.3f}"
            if "accuracy" in r:
                line += f", accuracy {r['accuracy']:.3f}"
            parts.append(line)
    return f"Done: {'; '.join(parts)}. Run folder: {run_dir}"
