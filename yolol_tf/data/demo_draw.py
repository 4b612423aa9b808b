"""Drawing the demo dataset's produce: ten classes, each a function that paints one object on a canvas.

Shapes (round, curved, elongated, clustered), colours and textures differ per class, with deliberate
look-alikes (apple/tomato, orange/carrot, lemon/banana). Every drawer paints into an RGB float image and
its uint8 mask from a random generator, so a seed gives the same object every time.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

CANVAS = 128  # objects are drawn at this size, then scaled and rotated into place

Rgb = tuple[float, float, float]


# ---------------------------------------------------------------------------------------------------
# Colours and textures


def _colour(rng: np.random.Generator, rgb: Rgb, spread: float = 0.12) -> Rgb:
    """``rgb`` with its brightness and each channel jittered, so no class is one exact colour."""
    scale = 1.0 + rng.uniform(-spread, spread)
    return tuple(float(np.clip(c * scale + rng.uniform(-18, 18), 0, 255)) for c in rgb)  # type: ignore


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Noise in [0, 1] with features about ``1/cells`` of the image wide."""
    small = rng.random((cells, cells)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _shading(size: int) -> np.ndarray:
    """Light from the upper left: a rounded 3-D look that every object shares."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    dist = np.sqrt((xx - 0.35) ** 2 + (yy - 0.3) ** 2)
    return np.clip(1.25 - 0.75 * dist, 0.55, 1.25)[..., None]


_SHADE = _shading(CANVAS)


# ---------------------------------------------------------------------------------------------------
# One drawing function per class. Each draws on an RGB float canvas and a uint8 mask (255 = object).


def _disc(img: np.ndarray, mask: np.ndarray, centre: tuple[float, float], radius: float, rgb: Rgb) -> None:
    c = (int(centre[0]), int(centre[1]))
    cv2.circle(img, c, int(radius), rgb, -1, cv2.LINE_AA)
    cv2.circle(mask, c, int(radius), 255, -1, cv2.LINE_AA)


def _ellipse(
    img: np.ndarray,
    mask: np.ndarray,
    centre: tuple[float, float],
    axes: tuple[float, float],
    rgb: Rgb,
    angle: float = 0.0,
) -> None:
    c, a = (int(centre[0]), int(centre[1])), (int(axes[0]), int(axes[1]))
    cv2.ellipse(img, c, a, angle, 0, 360, rgb, -1, cv2.LINE_AA)
    cv2.ellipse(mask, c, a, angle, 0, 360, 255, -1, cv2.LINE_AA)


def _leaves(img: np.ndarray, centre: tuple[float, float], n: int, length: float, rgb: Rgb, rng) -> None:
    """A star of thin green leaves (calyx): drawn on the image only, inside the fruit's mask."""
    for k in range(n):
        a = 2 * math.pi * k / n + rng.uniform(-0.3, 0.3)
        tip = (centre[0] + length * math.cos(a), centre[1] + length * math.sin(a) * 0.6)
        pts = np.array([centre, tip], np.int32)
        cv2.line(img, tuple(pts[0]), tuple(pts[1]), rgb, 3, cv2.LINE_AA)


def draw_apple(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    s = CANVAS
    base = (200, 30, 35) if rng.random() < 0.7 else (130, 190, 60)
    rgb = _colour(rng, base)
    # Two overlapping lobes give the dip at the top that tells an apple from a tomato.
    _disc(img, mask, (0.40 * s, 0.54 * s), 0.33 * s, rgb)
    _disc(img, mask, (0.60 * s, 0.54 * s), 0.33 * s, rgb)
    _disc(img, mask, (0.50 * s, 0.60 * s), 0.32 * s, rgb)
    xs = np.arange(s, dtype=np.float32)
    streaks = 1.0 + 0.08 * np.sin(xs / 3.0 + rng.uniform(0, 6))[None, :, None]
    img *= streaks
    cv2.line(img, (int(0.5 * s), int(0.28 * s)), (int(0.53 * s), int(0.1 * s)), (90, 55, 25), 4, cv2.LINE_AA)
    cv2.line(mask, (int(0.5 * s), int(0.28 * s)), (int(0.53 * s), int(0.1 * s)), 255, 4, cv2.LINE_AA)
    if rng.random() < 0.6:
        _ellipse(img, mask, (0.64 * s, 0.16 * s), (0.11 * s, 0.05 * s), _colour(rng, (60, 150, 50)), -25)


def draw_orange(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    s = CANVAS
    _disc(img, mask, (0.5 * s, 0.5 * s), 0.44 * s, _colour(rng, (245, 140, 25)))
    # Dimpled peel: fine blotchy noise that a smooth tomato or carrot lacks.
    dimples = _smooth_noise(rng, s, s, 40)
    img *= (0.82 + 0.3 * dimples)[..., None]
    cv2.circle(img, (int(0.5 * s), int(0.5 * s)), 3, (150, 110, 40), -1, cv2.LINE_AA)


def draw_banana(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    s = CANVAS
    rgb = _colour(rng, (235, 210, 50) if rng.random() < 0.8 else (180, 200, 60))
    centre, axes = (int(0.5 * s), int(0.28 * s)), (int(0.40 * s), int(0.45 * s))
    start, end, thick = 25, 155, int(0.15 * s)
    cv2.ellipse(img, centre, axes, 0, start, end, rgb, thick, cv2.LINE_AA)
    cv2.ellipse(mask, centre, axes, 0, start, end, 255, thick, cv2.LINE_AA)
    darker = tuple(c * 0.75 for c in rgb)
    cv2.ellipse(img, centre, (axes[0] - thick // 4, axes[1] - thick // 4), 0, start + 8, end - 8, darker, 2)
    for angle in (start, end):  # brown tips
        a = math.radians(angle)
        tip = (int(centre[0] + axes[0] * math.cos(a)), int(centre[1] + axes[1] * math.sin(a)))
        cv2.circle(img, tip, thick // 3, (90, 60, 30), -1, cv2.LINE_AA)
    if rng.random() < 0.5:  # ripe speckles
        ys, xs = np.nonzero(mask > 128)
        for k in rng.integers(0, len(ys), 12):
            cv2.circle(img, (int(xs[k]), int(ys[k])), 1, (110, 80, 30), -1)


def draw_lemon(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    s = CANVAS
    rgb = _colour(rng, (250, 228, 60))
    _ellipse(img, mask, (0.5 * s, 0.5 * s), (0.38 * s, 0.28 * s), rgb)
    for x0, x1 in ((0.12, 0.04), (0.88, 0.96)):  # the pointed ends
        pts = np.array([[x0 * s, 0.42 * s], [x1 * s, 0.5 * s], [x0 * s, 0.58 * s]], np.int32)
        cv2.fillConvexPoly(img, pts, rgb, cv2.LINE_AA)
        cv2.fillConvexPoly(mask, pts, 255, cv2.LINE_AA)
    img *= (0.93 + 0.12 * _smooth_noise(rng, s, s, 60))[..., None]


def draw_grapes(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    s = CANVAS
    base = _colour(rng, (105, 40, 120) if rng.random() < 0.65 else (165, 205, 85))
    r = 0.085 * s
    cv2.line(img, (int(0.5 * s), int(0.05 * s)), (int(0.5 * s), int(0.2 * s)), (100, 80, 40), 3)
    cv2.line(mask, (int(0.5 * s), int(0.05 * s)), (int(0.5 * s), int(0.2 * s)), 255, 3)
    for row, count in enumerate((5, 5, 4, 3, 2, 1)):
        y = 0.22 * s + row * 1.55 * r
        for k in range(count):
            x = 0.5 * s + (k - (count - 1) / 2) * 1.75 * r + rng.uniform(-2, 2)
            c = _colour(rng, base, 0.08)
            _disc(img, mask, (x, y + rng.uniform(-2, 2)), r, c)
            cv2.circle(img, (int(x - r / 3), int(y - r / 3)), 2, (230, 230, 240), -1, cv2.LINE_AA)


def draw_carrot(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    s = CANVAS
    rgb = _colour(rng, (240, 120, 30))
    body = np.array([[0.38 * s, 0.25 * s], [0.62 * s, 0.25 * s], [0.52 * s, 0.97 * s], [0.48 * s, 0.97 * s]])
    cv2.fillConvexPoly(img, body.astype(np.int32), rgb, cv2.LINE_AA)
    cv2.fillConvexPoly(mask, body.astype(np.int32), 255, cv2.LINE_AA)
    _ellipse(img, mask, (0.5 * s, 0.26 * s), (0.12 * s, 0.04 * s), rgb)
    for k in range(7):  # ridges across the root
        y = int((0.32 + 0.09 * k) * s)
        half = int((0.1 - 0.012 * k) * s)
        cv2.line(img, (int(0.5 * s) - half, y), (int(0.5 * s) + half // 3, y), tuple(c * 0.7 for c in rgb), 1)
    green = _colour(rng, (50, 140, 40))
    for dx in (-0.1, -0.04, 0.03, 0.09):
        p0, p1 = (int(0.5 * s), int(0.24 * s)), (int((0.5 + dx) * s), int(0.03 * s))
        cv2.line(img, p0, p1, green, 3, cv2.LINE_AA)
        cv2.line(mask, p0, p1, 255, 3, cv2.LINE_AA)


def draw_tomato(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    s = CANVAS
    _ellipse(img, mask, (0.5 * s, 0.52 * s), (0.44 * s, 0.37 * s), _colour(rng, (225, 40, 30)))
    cv2.ellipse(
        img,
        (int(0.36 * s), int(0.4 * s)),
        (int(0.08 * s), int(0.04 * s)),
        -30,
        0,
        360,
        (255, 200, 190),
        -1,
        cv2.LINE_AA,
    )  # glossy highlight
    _leaves(img, (0.5 * s, 0.22 * s), 5, 0.14 * s, _colour(rng, (40, 130, 40)), rng)


def draw_broccoli(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    s = CANVAS
    stem = np.array([[0.42 * s, 0.5 * s], [0.58 * s, 0.5 * s], [0.56 * s, 0.95 * s], [0.44 * s, 0.95 * s]])
    cv2.fillConvexPoly(img, stem.astype(np.int32), _colour(rng, (150, 195, 100)), cv2.LINE_AA)
    cv2.fillConvexPoly(mask, stem.astype(np.int32), 255, cv2.LINE_AA)
    base = _colour(rng, (45, 115, 45))
    for _ in range(26):  # florets: a lumpy crown of small dark discs
        a, d = rng.uniform(math.pi, 2 * math.pi), rng.uniform(0, 0.3 * s)
        x, y = 0.5 * s + d * math.cos(a) * 1.1, 0.5 * s + d * math.sin(a)
        _disc(img, mask, (x, y), rng.uniform(0.07, 0.12) * s, _colour(rng, base, 0.2))
    img *= (0.85 + 0.25 * _smooth_noise(rng, s, s, 50))[..., None]


def draw_eggplant(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    s = CANVAS
    rgb = _colour(rng, (75, 30, 85), 0.2)
    angles = np.linspace(0, 2 * math.pi, 24, endpoint=False)
    pts = [
        (0.5 * s + r * math.cos(a), y + r * math.sin(a))
        for y, r in ((0.66 * s, 0.28 * s), (0.3 * s, 0.15 * s))
        for a in angles
    ]
    hull = cv2.convexHull(np.array(pts, np.float32)).astype(np.int32)
    cv2.fillConvexPoly(img, hull, rgb, cv2.LINE_AA)
    cv2.fillConvexPoly(mask, hull, 255, cv2.LINE_AA)
    cv2.ellipse(
        img,
        (int(0.4 * s), int(0.6 * s)),
        (int(0.04 * s), int(0.18 * s)),
        10,
        0,
        360,
        (170, 140, 180),
        -1,
        cv2.LINE_AA,
    )  # glossy streak
    cap = np.array([[0.38 * s, 0.22 * s], [0.62 * s, 0.22 * s], [0.5 * s, 0.08 * s]], np.int32)
    cv2.fillConvexPoly(img, cap, _colour(rng, (70, 130, 50)), cv2.LINE_AA)
    cv2.fillConvexPoly(mask, cap, 255, cv2.LINE_AA)
    cv2.line(img, (int(0.5 * s), int(0.1 * s)), (int(0.5 * s), int(0.02 * s)), (70, 130, 50), 4)
    cv2.line(mask, (int(0.5 * s), int(0.1 * s)), (int(0.5 * s), int(0.02 * s)), 255, 4)


def draw_strawberry(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    s = CANVAS
    rgb = _colour(rng, (215, 30, 50))
    _ellipse(img, mask, (0.5 * s, 0.42 * s), (0.34 * s, 0.2 * s), rgb)
    body = np.array([[0.17 * s, 0.42 * s], [0.83 * s, 0.42 * s], [0.5 * s, 0.94 * s]], np.int32)
    cv2.fillConvexPoly(img, body, rgb, cv2.LINE_AA)
    cv2.fillConvexPoly(mask, body, 255, cv2.LINE_AA)
    for _ in range(30):  # seeds: only inside the berry
        x, y = rng.uniform(0.25, 0.75) * s, rng.uniform(0.35, 0.85) * s
        if mask[int(y), int(x)] > 200 and mask[int(y) + 3, int(x)] > 200:
            cv2.ellipse(img, (int(x), int(y)), (1, 2), 0, 0, 360, (245, 225, 90), -1)
    _leaves(img, (0.5 * s, 0.25 * s), 6, 0.18 * s, _colour(rng, (50, 150, 50)), rng)


DRAWERS: tuple[Callable[[np.ndarray, np.ndarray, np.random.Generator], None], ...] = (
    draw_apple, draw_orange, draw_banana, draw_lemon, draw_grapes,
    draw_carrot, draw_tomato, draw_broccoli, draw_eggplant, draw_strawberry,
)  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Backgrounds


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A table top: wood grain, gingham cloth, marble or a noisy colour gradient."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = rng.integers(0, 4)
    if kind == 0:  # wood: wavy grain along a random direction, with plank seams
        a = rng.uniform(0, math.pi)
        t = xx * math.cos(a) + yy * math.sin(a)
        warp = _smooth_noise(rng, h, w, 4) * rng.uniform(8, 20)
        grain = np.sin(t * rng.uniform(0.25, 0.6) + warp)
        base = np.array(_colour(rng, (150, 100, 60), 0.3), np.float32)
        img = base * (0.82 + 0.12 * grain[..., None])
        across = xx * -math.sin(a) + yy * math.cos(a)
        seams = (np.mod(across, rng.uniform(50, 90)) < 2.0)[..., None]
        img = np.where(seams, img * 0.55, img)
    elif kind == 1:  # cloth: gingham stripes and a fine weave
        period = int(rng.integers(10, 28))
        c1 = np.array(_colour(rng, tuple(rng.uniform(60, 250, 3)), 0.1), np.float32)
        c2 = np.array((245, 245, 240), np.float32)
        sx, sy = (xx // period) % 2, (yy // period) % 2
        mix = (0.5 * (sx + sy))[..., None]
        weave = 1.0 + 0.06 * (np.sin(xx * 2.2) * np.sin(yy * 2.2))[..., None]
        img = (c1 * mix + c2 * (1 - mix)) * weave
    elif kind == 2:  # marble: pale stone with dark veins
        noise = _smooth_noise(rng, h, w, 6) * rng.uniform(6, 14)
        veins = np.abs(np.sin(xx * 0.03 + yy * 0.02 + noise)) ** 0.3
        base = np.array(_colour(rng, (220, 218, 212), 0.08), np.float32)
        img = base * (0.6 + 0.4 * veins[..., None])
    else:  # a colour gradient under blotchy noise
        c1 = np.array(rng.uniform(30, 230, 3), np.float32)
        c2 = np.array(rng.uniform(30, 230, 3), np.float32)
        a = rng.uniform(0, 2 * math.pi)
        t = (xx * math.cos(a) + yy * math.sin(a)) / max(h, w)
        t = (t - t.min()) / (t.max() - t.min() + 1e-6)
        img = c1 * (1 - t[..., None]) + c2 * t[..., None]
        img += (_smooth_noise(rng, h, w, 8)[..., None] - 0.5) * 50
    return img.astype(np.float32)


def draw_object(rng: np.random.Generator, class_id: int) -> tuple[np.ndarray, np.ndarray]:
    """An object on its own canvas: RGB float image and alpha in [0, 1]."""
    img = np.zeros((CANVAS, CANVAS, 3), np.float32)
    mask = np.zeros((CANVAS, CANVAS), np.uint8)
    DRAWERS[class_id](img, mask, rng)
    img *= _SHADE
    return img, mask.astype(np.float32) / 255.0
