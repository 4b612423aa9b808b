"""Reading images the way training and prediction both see them, and letterboxing them to a square.

``read_image`` and ``letterbox`` are shared by the store writer and by ``predict``, so a model at inference
gets exactly the pixels it was trained on.

An image file can declare any size in a few bytes: a 100-byte PNG may claim 30000 x 30000 pixels, which
OpenCV would try to decode into 2.7 GB. ``read_image`` reads the declared size from the header first and
refuses images over ``pixel_limit()`` before decoding them.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import BmpImagePlugin, JpegImagePlugin, PngImagePlugin

from yolol_tf.errors import UserError

PAD_VALUE = 114  # the grey Ultralytics pads with, so crops look like YOLO training inputs

# IMREAD_COLOR applies the EXIF orientation (JPEG, PNG and WebP in OpenCV 5), turns grayscale into three
# channels and drops alpha. The RGB variant (OpenCV >= 4.10) saves a colour conversion per image.
_READ_FLAGS = getattr(cv2, "IMREAD_COLOR_RGB", cv2.IMREAD_COLOR)
# A JPEG decoded at 1/2, 1/4 or 1/8 of its size: the decoder scales in the DCT domain, skipping most of the
# inverse transform, which is cheaper than decoding it whole and then shrinking it.
_REDUCED_FLAGS = {
    factor: (flag & ~cv2.IMREAD_COLOR) | _READ_FLAGS
    for factor, flag in (
        (2, cv2.IMREAD_REDUCED_COLOR_2),
        (4, cv2.IMREAD_REDUCED_COLOR_4),
        (8, cv2.IMREAD_REDUCED_COLOR_8),
    )
}

# Pillow's own default limit (89.5 megapixels, about 256 MiB as 24-bit RGB): far above any photo or camera
# frame a detector is trained on, far below what exhausts a machine's memory.
MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3
MAX_PIXELS_ENV = "YOLOL_TF_MAX_PIXELS"

# Pillow's header readers by file signature: constructing one parses the header only, and unlike
# PIL.Image.open applies no size limit of its own, so the limit here is the only one. (Pillow's WebP reader
# allocates the whole canvas as it opens a file: WebP headers are read by _webp_size instead.)
_HEADER_READERS = (
    (b"\x89PNG\r\n\x1a\n", PngImagePlugin.PngImageFile),
    (b"\xff\xd8", JpegImagePlugin.JpegImageFile),
    (b"BM", BmpImagePlugin.BmpImageFile),
)


def pixel_limit() -> int:
    """The most pixels ``read_image`` decodes: ``$YOLOL_TF_MAX_PIXELS``, else ``MAX_PIXELS``.

    OpenCV refuses images over 2**30 pixels whatever this says (its ``OPENCV_IO_MAX_IMAGE_PIXELS``).

    Raises:
        UserError: when the environment variable is not a whole number >= 1.
    """
    value = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not value:
        return MAX_PIXELS
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit < 1:
        raise UserError(
            f"{MAX_PIXELS_ENV} must be a whole number of pixels >= 1. Received: {MAX_PIXELS_ENV}={value!r}"
        )
    return limit


def declared_size(data: bytes | np.ndarray) -> tuple[int, int] | None:
    """The ``(width, height)`` an image file's header declares, without decoding its pixels.

    Args:
        data: the whole file's bytes.

    Returns:
        None for a format without a header reader here, or a header too broken to read (the decoder then
        decides whether the file is an image at all).
    """
    head = bytes(data[:30])
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return _webp_size(head)
    reader = next((r for magic, r in _HEADER_READERS if head.startswith(magic)), None)
    if reader is None:
        return None
    try:
        with reader(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # a malformed header: not for this check to judge
        return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    """The canvas size in the first 30 bytes of a WebP file (RIFF header and first chunk), if it has one."""
    chunk = head[12:16]
    if chunk == b"VP8X" and len(head) >= 30:  # extended: 24-bit canvas width - 1 and height - 1
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    if chunk == b"VP8 " and len(head) >= 30 and head[23:26] == b"\x9d\x01\x2a":  # lossy key frame
        return int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(head[28:30], "little") & 0x3FFF
    if chunk == b"VP8L" and len(head) >= 25 and head[20] == 0x2F:  # lossless: 14-bit width - 1, height - 1
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def read_image(
    path: str | os.PathLike,
    max_pixels: int | None = None,
    *,
    reduction: Callable[[int, int], int] | None = None,
) -> np.ndarray:
    """Reads an image file as RGB uint8 ``[H, W, 3]``, with its EXIF orientation applied.

    Grayscale images are made RGB; the alpha channel of RGBA images is dropped; 16-bit images are
    scaled to 8 bits.

    Args:
        path: the image file (jpg, jpeg, png, bmp, webp, in any letter case).
        max_pixels: refuse images whose header declares more pixels than this, before decoding them;
            None reads the limit from ``pixel_limit()``.
        reduction: given the size the header declares (width, height, before EXIF orientation), how much
            smaller the caller can use the image: 1, 2, 4 or 8. A JPEG is then decoded that much smaller
            (its side rounded up); other formats are always decoded whole.

    Raises:
        UserError: naming the file when it is missing, cannot be decoded, or declares more pixels than
            the limit (with the size it declares).
    """
    path = os.fspath(path)
    limit = pixel_limit() if max_pixels is None else max_pixels
    try:
        # np.fromfile + imdecode rather than imread: imread cannot open non-ASCII paths on Windows.
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise UserError(f"{path}: cannot read image ({e.strerror or e})") from None
    size = declared_size(data)
    if size is not None and size[0] * size[1] > limit:
        width, height = size
        raise UserError(
            f"{path}: declares {width}x{height} pixels ({width * height / 1e6:.1f} megapixels), more than "
            f"the limit of {limit} pixels; decoding it could exhaust memory. If the image is genuine, set "
            f"{MAX_PIXELS_ENV}={width * height}"
        )
    flags = _READ_FLAGS
    if reduction is not None and size is not None and bytes(data[:2]) == b"\xff\xd8":
        flags = _REDUCED_FLAGS.get(reduction(*size), _READ_FLAGS)
    image = cv2.imdecode(data, flags) if data.size else None
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
