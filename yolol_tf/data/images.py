"""Reading images the way training and prediction both see them, and letterboxing them to a square.

``read_image`` and ``letterbox`` are shared by the store writer and by ``predict``, so a model at inference
gets exactly the pixels it was trained on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from yolol_tf.errors import UserError

PAD_VALUE = 114  # the grey Ultralytics pads with, so crops look like YOLO training inputs

# IMREAD_COLOR applies the EXIF orientation (JPEG, PNG and WebP in OpenCV 5), turns grayscale into three
# channels and drops alpha. The RGB variant (OpenCV >= 4.10) saves a colour conversion per image.
_READ_FLAGS = getattr(cv2, "IMREAD_COLOR_RGB", cv2.IMREAD_COLOR)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads an image file as RGB uint8 ``[H, W, 3]``, with its EXIF orientation applied.

    Grayscale images are made RGB; the alpha channel of RGBA images is dropped; 16-bit images are
    scaled to 8 bits.

    Args:
        path: the image file (jpg, jpeg, png, bmp, webp, in any letter case).

    Raises:
        UserError: naming the file when it is missing or cannot be decoded.
    """
    path = os.fspath(path)
    try:
        # np.fromfile + imdecode rather than imread: imread cannot open non-ASCII paths on Windows.
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise UserError(f"{path}: cannot read image ({e.strerror or e})") from None
    image = cv2.imdecode(data, _READ_FLAGS) if data.size else None
    if image is None:
        raise UserError(f"{path}: not a readable image (empty, truncated or of an unknown format)")
    if _READ_FLAGS == cv2.IMREAD_COLOR:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


@dataclass(frozen=True)
class LetterboxGeometry:
    """Where an image of a given size lands inside its ``size`` x ``size`` letterbox.

    Attributes:
        scale: factor applied to both sides of the source image.
        width: width of the scaled image in the letterbox, in pixels.
        height: height of the scaled image in the letterbox, in pixels.
        left: columns of padding on the left.
        top: rows of padding on the top.
    """

    scale: float
    width: int
    height: int
    left: int
    top: int


def letterbox_geometry(height: int, width: int, size: int) -> LetterboxGeometry:
    """The scale and padding ``letterbox`` uses for a ``height`` x ``width`` image.

    Args:
        height: source image height in pixels.
        width: source image width in pixels.
        size: side of the square output.
    """
    if height < 1 or width < 1:
        raise UserError(f"Cannot letterbox an empty image. Received: height={height}, width={width}")
    scale = size / max(height, width)
    new_w = min(size, max(1, round(width * scale)))
    new_h = min(size, max(1, round(height * scale)))
    return LetterboxGeometry(scale, new_w, new_h, (size - new_w) // 2, (size - new_h) // 2)


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """Scales the longer side to ``size``, keeps the aspect ratio, centres and pads with grey 114.

    Args:
        image: uint8 ``[H, W, 3]`` (a ``[H, W]`` grayscale image is made RGB).
        size: side of the square output.

    Returns:
        uint8 ``[size, size, 3]``.
    """
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    height, width = image.shape[:2]
    g = letterbox_geometry(height, width, size)
    if (g.width, g.height) != (width, height):
        # INTER_AREA averages the pixels a shrink drops (no aliasing); INTER_LINEAR for enlarging.
        shrinking = g.width < width or g.height < height
        image = cv2.resize(
            image, (g.width, g.height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        )
    out = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    out[g.top : g.top + g.height, g.left : g.left + g.width] = image
    return out
