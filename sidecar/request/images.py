"""Image dimensions from the header alone (PNG IHDR, JPEG SOFn), and the one decode the sidecar does.

Reading the header by hand costs about 1-3 µs per frame where Pillow's lazy ``Image.open`` costs
20-35 µs (benchmarks/bench_sidecar.py measures both). A frame goes to its model encoded, and a
corrupt body behind a valid header is the plugin's to report; only a frame that one request sends
to several models is decoded here, once (:func:`decode_rgb_into`), with the decoder the generated
wrapper would use (OpenCV when importable, else Pillow), so that every model gets the pixels it
would have decoded itself.
"""

from __future__ import annotations

import functools
import io
from typing import Any

import numpy as np

from sidecar.errors import InvalidInput

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
# SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC): the frame header with the dimensions.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RST0..7 (SOI and EOI are handled apart).
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_SOS = 0xDA
_EOI = 0xD9


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise InvalidInput("frame is not a PNG image (no PNG signature and IHDR header)")
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    if width == 0 or height == 0:
        raise InvalidInput(f"PNG header declares an empty image ({width}x{height})")
    return width, height


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's first SOFn segment."""
    if not data.startswith(JPEG_SOI):
        raise InvalidInput("frame is not a JPEG image (no SOI marker)")
    size = len(data)
    pos = 2
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            raise InvalidInput(f"JPEG header is corrupt (expected a marker at byte {pos})")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (_SOS, _EOI):
            break
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 2:
            raise InvalidInput(f"JPEG header is corrupt (segment length {length} at byte {pos})")
        if marker in _SOF_MARKERS:
            if pos + 9 > size:
                break
            height = (data[pos + 5] << 8) | data[pos + 6]
            width = (data[pos + 7] << 8) | data[pos + 8]
            if width == 0 or height == 0:
                raise InvalidInput(f"JPEG header declares an empty image ({width}x{height})")
            return width, height
        pos += 2 + length
    raise InvalidInput("JPEG header has no frame header (SOFn) before the image data")


#: The header reader of each encoded format: ``(width, height)`` of its bytes.
SIZE_READERS = {"jpeg": jpeg_size, "png": png_size}


def raw_size(data: bytes, width: int, height: int) -> tuple[int, int]:
    """Checks that raw HxWx3 pixels match the width and height given with them."""
    if width <= 0 or height <= 0:
        raise InvalidInput("raw frames need frame.width and frame.height")
    expected = width * height * 3
    if len(data) != expected:
        raise InvalidInput(
            f"raw frame holds {len(data)} bytes but {width}x{height}x3 needs {expected}"
        )
    return width, height


@functools.cache
def _cv2() -> Any:
    try:
        import cv2
    except Exception:  # not installed, or a broken native build: Pillow decodes instead
        return None
    return cv2


def decode_rgb_into(data: bytes, target: memoryview, width: int, height: int) -> bool:
    """Decode the JPEG or PNG ``data`` into ``target`` as ``height x width x 3`` RGB bytes; False
    when it cannot be decoded or is not that size (the models then get the frame encoded, and say
    why). Releases the GIL while it decodes (OpenCV; Pillow mostly)."""
    out = np.frombuffer(target, dtype=np.uint8)
    if out.size != width * height * 3:
        return False
    out = out.reshape(height, width, 3)
    cv2 = _cv2()
    if cv2 is not None:
        bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if bgr is None or bgr.shape != out.shape:
            return False
        cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=out)
        return True
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.size != (width, height):
                return False
            rgb = img.convert("RGB")
            rgb.load()
    except Exception:  # Pillow raises many kinds for truncated or corrupt data
        return False
    out[...] = np.asarray(rgb)
    return True
