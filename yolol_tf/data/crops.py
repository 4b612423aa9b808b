"""The conversion rule, as pure functions: which crops an image gives and which classes each one shows.

Crop mode (the default): for every box A of an image, the crop window is A in pixels grown on each side
by ``context`` times its width/height and clipped to the image; its multi-hot label is A's class plus the
class of every other box B with at least ``min_visible`` of B's area inside the window. A box narrower or
lower than ``min_box`` pixels is skipped (and counted). Image mode: one sample per image, the whole image,
labelled with every class in it.

Each sample also keeps the objects that make its label (``Sample.objects``: the anchor and every box
counted, or every box in image mode), which :func:`geometry` maps into the crop's output coordinates for
the store, so that CutMix (``yolol_tf.data.mix``) can apply the same ``min_visible`` rule to a mixed crop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from yolol_tf.data.images import letterbox, letterbox_geometry
from yolol_tf.data.labels import Box

# Labels are written with ~6 decimals: an edge at 3.99998 px is at 4, not a pixel row further out.
_EPS = 1e-2


@dataclass(frozen=True)
class Sample:
    """One crop to cut from an image.

    Attributes:
        box: 0-based line of the anchor box in its label file; None in image mode.
        window: ``(x1, y1, x2, y2)`` in source pixels after EXIF orientation; x2 and y2 exclusive.
        label_ids: ascending class ids shown in the crop.
        objects: ``(class, x1, y1, x2, y2)`` in source pixels of each box that makes the label: the anchor
            first, then every other box counted (in image mode, every box); whole boxes, not clipped to
            the window.
    """

    box: int | None
    window: tuple[int, int, int, int]
    label_ids: tuple[int, ...]
    objects: tuple[tuple[int, float, float, float, float], ...] = ()


def _pixels(box: Box, width: int, height: int) -> tuple[float, float, float, float]:
    return box.x1 * width, box.y1 * height, box.x2 * width, box.y2 * height


def _window(
    box: tuple[float, float, float, float], context: float, width: int, height: int
) -> tuple[int, int, int, int]:
    """The anchor grown by ``context`` of its size on each side, widened to whole pixels, clipped."""
    x1, y1, x2, y2 = box
    gx, gy = context * (x2 - x1), context * (y2 - y1)
    left = min(width - 1, max(0, math.floor(x1 - gx + _EPS)))
    top = min(height - 1, max(0, math.floor(y1 - gy + _EPS)))
    right = max(left + 1, min(width, math.ceil(x2 + gx - _EPS)))
    bottom = max(top + 1, min(height, math.ceil(y2 + gy - _EPS)))
    return left, top, right, bottom


def visible_fraction(box: tuple[float, float, float, float], window: tuple[int, int, int, int]) -> float:
    """The fraction of ``box``'s area inside ``window`` (both in pixels)."""
    iw = min(box[2], window[2]) - max(box[0], window[0])
    ih = min(box[3], window[3]) - max(box[1], window[1])
    area = (box[2] - box[0]) * (box[3] - box[1])
    return max(0.0, iw) * max(0.0, ih) / area if area > 0 else 0.0


def plan_crops(
    boxes: Sequence[Box],
    width: int,
    height: int,
    *,
    context: float = 0.0,
    min_visible: float = 0.5,
    min_box: float = 2.0,
) -> tuple[list[Sample], int]:
    """The crops of one image in crop mode.

    Args:
        boxes: the image's boxes, normalised and clipped to [0, 1].
        width: image width in pixels (after EXIF orientation).
        height: image height in pixels.
        context: how much to grow each side of the anchor, as a fraction of its width/height.
        min_visible: fraction of another box's area that must be inside the window for its class to count.
        min_box: anchors narrower or lower than this many pixels are skipped.

    Returns:
        The samples in box order, and the number of boxes skipped as too small.
    """
    pixels = [_pixels(b, width, height) for b in boxes]
    samples, skipped = [], 0
    for a, pa in zip(boxes, pixels, strict=True):
        if pa[2] - pa[0] < min_box or pa[3] - pa[1] < min_box:
            skipped += 1
            continue
        window = _window(pa, context, width, height)
        objects = [(a.cls, *pa)]
        for b, pb in zip(boxes, pixels, strict=True):
            # A tiny slack so a box exactly half inside counts at min_visible=0.5.
            if b is not a and visible_fraction(pb, window) >= min_visible - 1e-9:
                objects.append((b.cls, *pb))
        labels = tuple(sorted({o[0] for o in objects}))
        samples.append(Sample(a.line, window, labels, tuple(objects)))
    return samples, skipped


def plan_image(boxes: Sequence[Box], width: int, height: int) -> Sample:
    """The single sample of an image in image mode: the whole image, every class in it."""
    labels = tuple(sorted({b.cls for b in boxes}))
    return Sample(
        None, (0, 0, width, height), labels, tuple((b.cls, *_pixels(b, width, height)) for b in boxes)
    )


def geometry(sample: Sample, size: int, max_objects: int) -> tuple[np.ndarray, np.ndarray]:
    """Where the sample's objects and pixels lie in its ``size`` x ``size`` crop, as ``cut`` makes it.

    Coordinates are normalised to the crop: the window's pixels fill the letterbox's inner rectangle, and a
    box keeps its whole extent (it may reach past the window, or past [0, 1]), as ``min_visible`` divides by
    its whole area.

    Args:
        sample: a planned sample.
        size: the crop side.
        max_objects: rows of the result; the rows after the sample's objects have class -1 and no area.

    Returns:
        float32 ``[max_objects, 5]`` rows ``(class, x1, y1, x2, y2)``, and float32 ``[4]``, the part of the
        crop the window fills (``x1, y1, x2, y2``; the rest is letterbox padding).
    """
    if len(sample.objects) > max_objects:
        raise ValueError(f"{len(sample.objects)} objects, more than max_objects={max_objects}")
    x1, y1, x2, y2 = sample.window
    g = letterbox_geometry(y2 - y1, x2 - x1, size)
    # cv2.resize maps pixel edges linearly: the window's edge x1 lands at g.left, x2 at g.left + g.width.
    sx, sy = g.width / (x2 - x1) / size, g.height / (y2 - y1) / size
    ox, oy = g.left / size - x1 * sx, g.top / size - y1 * sy
    objects = np.zeros((max_objects, 5), "<f4")  # little-endian, as the store holds them
    objects[:, 0] = -1
    for k, (cls, bx1, by1, bx2, by2) in enumerate(sample.objects):
        objects[k] = (cls, ox + bx1 * sx, oy + by1 * sy, ox + bx2 * sx, oy + by2 * sy)
    content = np.array([g.left, g.top, g.left + g.width, g.top + g.height], "<f4") / np.float32(size)
    return objects, content


def cut(image: np.ndarray, window: tuple[int, int, int, int], size: int) -> np.ndarray:
    """The window of ``image`` letterboxed to ``size`` x ``size`` (uint8 ``[size, size, 3]``)."""
    x1, y1, x2, y2 = window
    return letterbox(image[y1:y2, x1:x2], size)


def multi_hot(label_ids: Sequence[int], num_classes: int) -> np.ndarray:
    """uint8 ``[num_classes]`` with ones at ``label_ids``."""
    out = np.zeros(num_classes, dtype=np.uint8)
    out[list(label_ids)] = 1
    return out
