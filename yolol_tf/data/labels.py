"""Reading YOLO label files: one ``Box`` per sound line, one ``Problem`` per unsound one.

A line is ``class cx cy w h`` (normalised) or a segmentation ``class x1 y1 x2 y2 ...`` (its polygon's
bounding box). Problems are collected as records rather than raised, so a dataset converts what is sound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

COORD_TOLERANCE = 1e-3  # label tools round; values this far outside [0, 1] are clipped silently

# Problem kinds, in the order the summary lists them.
PROBLEM_KINDS = {
    "class": "class id out of range",
    "fields": "wrong field count",
    "number": "non-numeric value",
    "bounds": "coordinates outside [0, 1]",
    "zero_size": "zero-size box",
    "image": "unreadable or missing image",
    "orphan_label": "label file without an image",
    "shared_label": "label file shared by several images",
    "encoding": "undecodable text",
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the dataset, reported once.

    Attributes:
        kind: a key of ``PROBLEM_KINDS``.
        file: absolute path of the file at fault.
        line: 1-based line number, or None for a whole file.
        value: the offending text.
        message: what is wrong.
    """

    kind: str
    file: str
    line: int | None
    value: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}. Received: {self.value!r}"


@dataclass(frozen=True)
class Box:
    """One object of a label file, in normalised coordinates clipped to [0, 1].

    Attributes:
        line: 0-based line of the box in its label file.
        cls: class id.
    """

    line: int
    cls: int
    x1: float
    y1: float
    x2: float
    y2: float


def parse_labels(path: str, num_classes: int) -> tuple[list[Box], list[Problem]]:
    """Reads a YOLO label file: sound boxes, and one problem per unsound line.

    A line is ``class cx cy w h`` (normalised) or a segmentation ``class x1 y1 x2 y2 ...`` (its polygon's
    bounding box). Every value after the class must be in [0, 1]; a box whose corners stick out of the image
    is clipped to it (Ultralytics' rule). A missing or empty file means no objects.

    Args:
        path: the label file.
        num_classes: class ids must be in ``0..num_classes-1``.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return [], []
    except OSError as e:
        return [], [Problem("encoding", path, None, "", f"cannot read label file ({e.strerror or e})")]
    boxes, problems = [], []
    for i, raw in enumerate(data.split(b"\n")):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            bad = repr(raw[e.start : e.end])[2:-1]
            problems.append(Problem("encoding", path, i + 1, bad, "not UTF-8 text"))
            continue
        text = text.lstrip("\ufeff").strip()
        if text:
            result = _parse_line(text, num_classes)
            if isinstance(result, tuple):
                problems.append(Problem(result[0], path, i + 1, result[1], result[2]))
            else:
                boxes.append(Box(i, *result))
    return boxes, problems


def _parse_line(text: str, num_classes: int) -> list | tuple[str, str, str]:
    """``[cls, x1, y1, x2, y2]`` for a sound line, else ``(kind, value, message)``."""
    fields = text.split()
    n = len(fields)
    if n < 5 or (n > 5 and n % 2 == 0):
        return "fields", text, f"expected 'class cx cy w h' or 'class x1 y1 x2 y2 ...' (found {n} fields)"
    values = []
    for f in fields:
        try:
            v = float(f)
        except ValueError:
            v = math.nan
        if not math.isfinite(v):
            return "number", f, "not a number"
        values.append(v)
    cls = values[0]
    if not cls.is_integer():
        return "number", fields[0], "class id is not a whole number"
    if not 0 <= cls < num_classes:
        return "class", fields[0], f"class id out of range 0..{num_classes - 1}"
    coords = values[1:]
    # Ultralytics' rule: the values written must be in [0, 1]; a box's corners may still stick out of the
    # image (cx 0.95, w 0.3), and the box is then clipped to it.
    for i, v in enumerate(coords):
        if not -COORD_TOLERANCE <= v <= 1 + COORD_TOLERANCE:
            name = ("cx", "cy", "w", "h")[i] if n == 5 else f"{'xy'[i % 2]}{i // 2 + 1}"
            return "bounds", text, f"{name}={fields[i + 1]} is outside [0, 1]"
    if n == 5:
        cx, cy, w, h = coords
        if w <= 0 or h <= 0:
            return "zero_size", text, "zero-size box"
        xs, ys = (cx - w / 2, cx + w / 2), (cy - h / 2, cy + h / 2)
    else:
        xs, ys = coords[0::2], coords[1::2]
    x1, y1 = max(0.0, min(xs)), max(0.0, min(ys))
    x2, y2 = min(1.0, max(xs)), min(1.0, max(ys))
    if x2 <= x1 or y2 <= y1:
        return "zero_size", text, "zero-size box"
    return [int(cls), x1, y1, x2, y2]
