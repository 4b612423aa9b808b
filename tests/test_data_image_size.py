"""Images that declare huge sizes are refused from their header, before any pixel is decoded."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolol_tf.data import images
from yolol_tf.data.images import MAX_PIXELS, declared_size, read_image
from yolol_tf.errors import UserError


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(width: int = 30000, height: int = 30000) -> bytes:
    """A valid PNG of ~100 bytes that declares ``width`` x ``height`` RGB pixels (one row of data)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = zlib.compress(b"\0" * (1 + 3 * width), 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", row) + _chunk(b"IEND", b"")


def huge_webp(width: int = 16383, height: int = 16383) -> bytes:
    """An extended-format WebP header that declares a ``width`` x ``height`` canvas and holds no image."""
    vp8x = bytes([0, 0, 0, 0]) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.fixture
def decoded(monkeypatch) -> list[bytes]:
    """The files the decoder is given, in order."""
    seen: list[bytes] = []
    imdecode = cv2.imdecode

    def record(data, flags):
        seen.append(np.asarray(data).tobytes())
        return imdecode(data, flags)

    monkeypatch.setattr(cv2, "imdecode", record)
    return seen


def test_the_default_limit_is_pillows(monkeypatch):
    from PIL import Image

    monkeypatch.delenv(images.MAX_PIXELS_ENV, raising=False)
    assert MAX_PIXELS == images.pixel_limit() == Image.MAX_IMAGE_PIXELS == 89_478_485


@pytest.mark.parametrize("make, size", [(huge_png, "30000x30000"), (huge_webp, "16383x16383")])
def test_an_image_declaring_a_huge_size_is_refused_without_decoding(tmp_path, decoded, make, size):
    path = tmp_path / "bomb.png"
    path.write_bytes(make())
    with pytest.raises(UserError) as e:
        read_image(path)
    assert e.value.message.startswith(f"{path}: declares {size} pixels")
    assert f"limit of {MAX_PIXELS} pixels" in e.value.message and images.MAX_PIXELS_ENV in e.value.message
    assert decoded == []


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".webp"])
def test_the_declared_size_of_each_image_format(tmp_path, ext):
    ok, encoded = cv2.imencode(ext, np.zeros((37, 53, 3), np.uint8))
    assert ok and declared_size(encoded.tobytes()) == (53, 37)


def test_the_limit_comes_from_the_argument_or_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "a.jpg"
    assert cv2.imwrite(str(path), np.zeros((48, 64, 3), np.uint8))
    assert read_image(path, max_pixels=64 * 48).shape == (48, 64, 3)  # at the limit is allowed
    with pytest.raises(UserError, match=r"declares 64x48 pixels .*limit of 3071 pixels"):
        read_image(path, max_pixels=64 * 48 - 1)
    monkeypatch.setenv(images.MAX_PIXELS_ENV, "3000")
    with pytest.raises(UserError, match="limit of 3000 pixels"):
        read_image(path)
    monkeypatch.setenv(images.MAX_PIXELS_ENV, "1e9")
    with pytest.raises(UserError, match=r"YOLOL_TF_MAX_PIXELS must be a whole number .*'1e9'"):
        read_image(path)


def test_an_unreadable_header_leaves_the_verdict_to_the_decoder(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n junk")
    assert declared_size(path.read_bytes()) is None
    with pytest.raises(UserError, match="not a readable image"):
        read_image(path)


def test_conversion_reports_a_huge_image_as_a_problem_and_converts_the_rest(
    tmp_path, decoded, make_yolo_dataset
):
    from yolol_tf.data.store import prepare, read_problems

    data = make_yolo_dataset(tmp_path / "ds", "ultralytics")
    bomb = tmp_path / "ds/images/train/bomb.png"
    bomb.write_bytes(huge_png())
    store = prepare(data, tmp_path / "store", workers=1, progress=False)
    problems = read_problems(store)
    assert [(p.kind, Path(p.file)) for p in problems] == [("image", bomb)]
    assert "declares 30000x30000 pixels" in str(problems[0])
    assert len(decoded) == 6 and huge_png() not in decoded  # the dataset's six images, not the huge one
