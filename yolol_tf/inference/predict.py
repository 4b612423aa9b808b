"""Classify images, or the boxes of YOLO label files, with any model this tool writes.

A model is a run folder, a ``.keras`` file, a SavedModel folder, a ``.tflite`` file (float or int8) or
an ``.onnx`` file, loaded by :func:`yolol_tf.inference.runners.load_runner`. Each image (or box) is read and letterboxed
exactly like the training crops (``yolol_tf.data.read_image`` and ``letterbox``), so inference sees what
training saw. :func:`format_predictions` renders the result as a table, JSON or CSV.

Example::

    from yolol_tf.inference.predict import predict, format_predictions
    preds = predict("saved_models/first", ["photos/"])
    print(format_predictions(preds, "table"))
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from yolol_tf.errors import UserError
from yolol_tf.inference.runners import Runner, load_runner
from yolol_tf.runs import Labels

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
FORMATS = ("table", "json", "csv")


try:  # the data helpers' public names; their module path is the fallback while the package settles
    from yolol_tf.data import letterbox, read_image
except ImportError:  # pragma: no cover - depends on the data package's __init__
    from yolol_tf.data.images import letterbox, read_image


@dataclass(frozen=True)
class Prediction:
    """One classified image or box.

    Attributes:
        image: the image file.
        box: 0-based line of the box in the image's label file; None when the whole image was classified.
        xyxy: the box in pixels (x1, y1, x2, y2); None for whole images.
        labels: (class name, probability) for classes at or above their threshold, most probable first.
        probabilities: every class's probability by name, in class order.
    """

    image: Path
    box: int | None
    xyxy: tuple[int, int, int, int] | None
    labels: list[tuple[str, float]]
    probabilities: dict[str, float] = field(repr=False)


def find_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Image files among ``paths``: files as given, folders searched recursively by extension.

    Args:
        paths: image files or folders.
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.is_file():
            found.append(p)
        else:
            raise UserError(f"No image or folder at {p}")
    return found


def read_boxes(label_file: Path, width: int, height: int) -> list[tuple[int, tuple[int, int, int, int]]]:
    """(line, pixel window) of each box in a YOLO label file, cut by training's crop rule with context 0.

    Lines are ``class cx cy w h`` or segmentation polygons (their bounding box); the class ids are not
    used, so label files of any class set work. Unsound lines are reported on stderr and skipped.

    Args:
        label_file: the ``.txt`` file.
        width: image width in pixels (after EXIF orientation).
        height: image height in pixels.
    """
    from yolol_tf.data.crops import plan_crops
    from yolol_tf.data.labels import parse_labels

    boxes, problems = parse_labels(str(label_file), 1 << 30)
    for problem in problems:
        print(f"warning: skipped {problem}", file=sys.stderr)
    # min_box left at plan_crops' default, the one prepare and open_data use too: boxes too small to be
    # training crops are not classified either.
    samples, _ = plan_crops(boxes, width, height, context=0.0)
    return [(s.box, s.window) for s in samples]


def _label_file(image: Path, boxes_dir: Path, roots: Sequence[Path]) -> Path | None:
    """The label file of ``image``: same relative path under ``boxes_dir``, else same stem at its top."""
    for root in roots:
        try:
            rel = image.relative_to(root)
        except ValueError:
            continue
        candidate = (boxes_dir / rel).with_suffix(".txt")
        if candidate.is_file():
            return candidate
    candidate = boxes_dir / f"{image.stem}.txt"
    return candidate if candidate.is_file() else None


def predict(
    model: str | os.PathLike | Runner,
    paths: Sequence[str | os.PathLike],
    *,
    boxes: str | os.PathLike | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> list[Prediction]:
    """Classifies images whole, or box by box when YOLO label files are given.

    Unreadable images (and, with ``boxes``, images without a label file) are reported on stderr and
    skipped.

    Args:
        model: a run folder, ``.keras``, SavedModel folder, ``.tflite`` or ``.onnx`` file, or a loaded
            :class:`Runner`.
        paths: images or folders (searched recursively for jpg, jpeg, png, bmp, webp in any case).
        boxes: a folder of YOLO label files (``<image stem>.txt``, or mirroring the image folders).
        batch_size: crops per model call.
        progress: show a progress bar on stderr.

    Raises:
        UserError: a missing path, no images among ``paths``, or a model that cannot be loaded.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
    boxes_dir = Path(boxes) if boxes is not None else None
    if boxes_dir is not None and not boxes_dir.is_dir():
        raise UserError(f"--boxes must be a folder of YOLO label files. Received: {boxes_dir}")
    images = find_images(paths)
    if not images:  # checked before the model loads: an empty result would look like a success
        raise UserError(
            f"No images in {', '.join(str(p) for p in paths) or '(no paths given)'}: folders are searched "
            f"recursively for {', '.join(sorted(IMAGE_EXTENSIONS))} (any case)"
        )
    runner = model if isinstance(model, Runner) else load_runner(model)
    roots = [Path(p) for p in paths if Path(p).is_dir()]
    preds: list[Prediction] = []
    pending: list[tuple[Path, int | None, tuple | None, np.ndarray]] = []

    def flush() -> None:
        if pending:
            probs = runner(np.stack([crop for *_, crop in pending]))
            preds.extend(
                _prediction(runner.labels, *item[:3], p) for item, p in zip(pending, probs, strict=True)
            )
            pending.clear()

    for image_path in tqdm(images, desc="predict", unit="img", disable=not progress, file=sys.stderr):
        try:
            image = read_image(image_path)
        except UserError as e:
            print(f"warning: skipped {e.message}", file=sys.stderr)
            continue
        if boxes_dir is None:
            pending.append((image_path, None, None, _fit(image, runner)))
        else:
            label_file = _label_file(image_path, boxes_dir, roots)
            if label_file is None:
                print(f"warning: skipped {image_path}: no label file in {boxes_dir}", file=sys.stderr)
                continue
            for line, (x1, y1, x2, y2) in read_boxes(label_file, image.shape[1], image.shape[0]):
                crop = _fit(image[y1:y2, x1:x2], runner)
                pending.append((image_path, line, (x1, y1, x2, y2), crop))
        if len(pending) >= batch_size:
            flush()
    flush()
    return preds


def _fit(image: np.ndarray, runner: Runner) -> np.ndarray:
    """Letterboxed to the model's input; grey for one-channel models (Sign-MNIST)."""
    crop = letterbox(image, runner.size)
    if runner.labels.input_shape[-1] == 1:
        import cv2

        crop = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)[:, :, None]
    return crop


def _prediction(labels: Labels, image: Path, box, xyxy, probs: np.ndarray) -> Prediction:
    order = np.argsort(-probs, kind="stable")
    chosen = [(labels.names[i], float(probs[i])) for i in order if probs[i] >= labels.thresholds[i]]
    if not chosen and labels.activation == "softmax":
        # Single-label models always name a class: the most probable one.
        chosen = [(labels.names[order[0]], float(probs[order[0]]))]
    return Prediction(
        image, box, xyxy, chosen, {n: float(p) for n, p in zip(labels.names, probs, strict=True)}
    )


def check_format(fmt: str) -> None:
    """Refuses an output format :func:`format_predictions` does not write (call it before predicting).

    Raises:
        UserError: ``fmt`` is not "table", "json" or "csv".
    """
    if fmt not in FORMATS:
        raise UserError(f"--format must be table, json or csv. Received: format={fmt!r}")


def format_predictions(preds: Sequence[Prediction], fmt: str = "table") -> str:
    """Predictions as a text table, JSON, or CSV (one column per class probability).

    Args:
        preds: what :func:`predict` returned.
        fmt: "table", "json" or "csv".

    Raises:
        UserError: an unknown ``fmt``.
    """
    check_format(fmt)
    if fmt == "json":
        rows = [
            {
                "image": str(p.image),
                "box": p.box,
                "xyxy": list(p.xyxy) if p.xyxy else None,
                "labels": [{"name": n, "probability": round(s, 6)} for n, s in p.labels],
                "probabilities": {n: round(s, 6) for n, s in p.probabilities.items()},
            }
            for p in preds
        ]
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        names = list(preds[0].probabilities) if preds else []
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["image", "box", "x1", "y1", "x2", "y2", "labels", *names])
        for p in preds:
            xyxy = list(p.xyxy) if p.xyxy else ["", "", "", ""]
            # A JSON list: a class name may hold any separator, and the CSV writer quotes the cell.
            labels = json.dumps([n for n, _ in p.labels], ensure_ascii=False)
            writer.writerow(
                [
                    p.image,
                    "" if p.box is None else p.box,
                    *xyxy,
                    labels,
                    *(f"{s:.6f}" for s in p.probabilities.values()),
                ]
            )
        return out.getvalue()
    lines = []
    for p in preds:
        where = str(p.image) if p.box is None else f"{p.image} [box {p.box}: {','.join(map(str, p.xyxy))}]"
        found = ", ".join(f"{n} {s:.3f}" for n, s in p.labels) or "-"
        lines.append(f"{where}\t{found}")
    return "\n".join(lines) + ("\n" if lines else "")


__all__ = [
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "Prediction",
    "check_format",
    "find_images",
    "format_predictions",
    "predict",
    "read_boxes",
]
