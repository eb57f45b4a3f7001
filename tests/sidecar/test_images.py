"""Image dimensions read from headers (PNG IHDR, JPEG SOFn) without decoding."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from sidecar.errors import InvalidInput
from sidecar.request.images import jpeg_size, png_size, raw_size


def encode(width: int, height: int, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((height, width, 3), "uint8")).save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"progressive": True},
        {"exif": b"Exif\x00\x00" + b"\x00" * 3000},
        {"quality": 20, "optimize": True},
    ],
)
def test_jpeg_size_reads_the_frame_header_when_segments_precede_it(options):
    assert jpeg_size(encode(641, 479, "JPEG", **options)) == (641, 479)


def test_png_size_reads_ihdr():
    assert png_size(encode(33, 17, "PNG")) == (33, 17)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "no SOI marker"),
        (b"\x89PNG\r\n\x1a\n", "no SOI marker"),
        (b"\xff\xd8\x00\x00\x00\x00", "corrupt"),
        (b"\xff\xd8\xff\xe0\x00\x01\x00\x00", "segment length 1"),
        (b"\xff\xd8\xff\xda\x00\x08", "no frame header"),
        (b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x00\x00\x10", "empty image (16x0)"),
    ],
)
def test_jpeg_size_raises_invalid_input_when_header_is_wrong(data, needle):
    with pytest.raises(InvalidInput, match=re.escape(needle)):
        jpeg_size(data)


def test_png_size_raises_invalid_input_when_not_png():
    with pytest.raises(InvalidInput, match="not a PNG"):
        png_size(encode(8, 8, "JPEG"))


def test_raw_size_checks_byte_count():
    assert raw_size(bytes(4 * 2 * 3), 4, 2) == (4, 2)
    with pytest.raises(InvalidInput, match="holds 23 bytes but 4x2x3 needs 24"):
        raw_size(bytes(23), 4, 2)
