"""Input tensors to RGB frames, and the synthetic input of the warmup inference.

``jpeg``/``png``: the FRAME tensor holds the encoded bytes; decoded with OpenCV when ``cv2`` is
importable in the model's environment, else with Pillow. ``raw_rgb``/``raw_bgr``: the tensor is
HxWx3 pixels. Either way the result is a new, owned, C-contiguous ``uint8`` RGB array.

A frame the sidecar decoded already (several models asked about it: request parameter ``pixels``,
:mod:`ruth_protocol`) comes to an encoded-format model as its RGB pixels, flat, and is only reshaped
and copied (:meth:`Decoder.decode` with ``pixels``).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from ruth_errors import INVALID_INPUT, RuthError
from ruth_protocol import ENCODED_FORMATS as ENCODED
from ruth_protocol import INPUT_FORMATS
from ruth_protocol import RAW_FORMATS as RAW

_MAGIC = {"jpeg": b"\xff\xd8\xff", "png": b"\x89PNG\r\n\x1a\n"}


def _import_cv2() -> Any:
    try:
        import cv2
    except Exception:  # not installed, or a broken native build: Pillow decodes instead
        return None
    return cv2


def _import_pil() -> Any:
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image


class Decoder:
    """Decodes the FRAME tensor of one declared ``input`` contract section."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.format = str(spec["format"])
        self.min_size = (int(spec.get("min_width") or 1), int(spec.get("min_height") or 1))
        self.max_size = (spec.get("max_width"), spec.get("max_height"))
        self._cv2 = _import_cv2() if self.format != "raw_rgb" else None
        self._pil = _import_pil() if self.format in ENCODED else None
        if self.format in ENCODED and self._cv2 is None and self._pil is None:
            raise RuntimeError(f"decoding {self.format} needs OpenCV (cv2) or Pillow in the environment")
        if self.format not in INPUT_FORMATS:
            raise RuntimeError(f"unknown input format {self.format!r}")

    @property
    def backend(self) -> str:
        if self.format in RAW:
            return "cv2" if self._cv2 is not None else "numpy"
        return "cv2" if self._cv2 is not None else "pillow"

    def decode(self, data: np.ndarray | None, pixels: Any = None) -> np.ndarray:
        """RGB ``uint8`` HxWx3 of one request's FRAME tensor; RuthError(INVALID_INPUT) if unusable.

        ``pixels``: the request's ``pixels`` parameter, ``"<width>x<height>"`` when FRAME holds the
        frame decoded already (RGB), for a model that takes an encoded format."""
        if data is None:
            raise _invalid("the request has no FRAME input")
        if data.dtype != np.uint8:
            raise _invalid(f"FRAME must be UINT8, got {data.dtype}")
        if pixels is not None and self.format in ENCODED:
            image = _decoded(data, pixels)
        else:
            image = self._decode_encoded(data) if self.format in ENCODED else self._decode_raw(data)
        self._check_size(image)
        return image

    def _decode_encoded(self, data: np.ndarray) -> np.ndarray:
        if data.ndim == 2 and data.shape[0] == 1:
            data = data[0]
        if data.ndim != 1:
            raise _invalid(f"FRAME must be one {self.format} byte string per request, got shape {data.shape}")
        buffer = np.ascontiguousarray(data)
        if not buffer[: len(_MAGIC[self.format])].tobytes() == _MAGIC[self.format]:
            raise _invalid(f"FRAME is not {self.format} data (the model declares input.format {self.format})")
        if self._cv2 is not None:
            bgr = self._cv2.imdecode(buffer, self._cv2.IMREAD_COLOR)
            if bgr is None:
                raise _invalid(f"FRAME could not be decoded as {self.format}")
            return self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB)
        return self._decode_pillow(buffer)

    def _decode_pillow(self, buffer: np.ndarray) -> np.ndarray:
        try:
            with self._pil.open(io.BytesIO(buffer.tobytes())) as img:
                self._check_size_wh(*img.size)
                rgb = img.convert("RGB")
                rgb.load()
        except RuthError:
            raise
        except Exception as exc:  # Pillow raises many kinds for truncated or corrupt data
            raise _invalid(f"FRAME could not be decoded as {self.format}: {exc}") from exc
        return np.array(rgb, dtype=np.uint8, order="C")

    def _decode_raw(self, data: np.ndarray) -> np.ndarray:
        if data.ndim == 4 and data.shape[0] == 1:
            data = data[0]
        if data.ndim != 3 or data.shape[2] != 3:
            raise _invalid(f"FRAME must be HxWx3 pixels (one frame per request), got shape {data.shape}")
        if self.format == "raw_bgr":
            return self._bgr_to_rgb(data)
        return np.array(data, dtype=np.uint8, order="C", copy=True)

    def _bgr_to_rgb(self, bgr: np.ndarray) -> np.ndarray:
        """A new RGB array (a reversed-stride copy is ~50x slower than either of these)."""
        if self._cv2 is not None:
            return self._cv2.cvtColor(np.ascontiguousarray(bgr), self._cv2.COLOR_BGR2RGB)
        rgb = np.empty(bgr.shape, dtype=np.uint8)
        for channel in range(3):
            rgb[:, :, channel] = bgr[:, :, 2 - channel]
        return rgb

    def _check_size(self, image: np.ndarray) -> None:
        self._check_size_wh(image.shape[1], image.shape[0])

    def _check_size_wh(self, width: int, height: int) -> None:
        min_w, min_h = self.min_size
        max_w, max_h = self.max_size
        if width < min_w or height < min_h:
            raise _invalid(f"frame is {width}x{height}, smaller than the minimum {min_w}x{min_h}")
        if (max_w and width > max_w) or (max_h and height > max_h):
            raise _invalid(f"frame is {width}x{height}, larger than the maximum {max_w}x{max_h}")

    def synthetic(self) -> np.ndarray:
        """A FRAME tensor (without batch dimension) of the minimum declared size, for the warmup."""
        width, height = self.min_size
        ys, xs = np.mgrid[0:height, 0:width]
        rgb = np.stack(
            [(xs * 255 // max(width - 1, 1)), (ys * 255 // max(height - 1, 1)), np.full_like(xs, 128)],
            axis=-1,
        ).astype(np.uint8)
        if self.format == "raw_rgb":
            return rgb
        if self.format == "raw_bgr":
            return np.ascontiguousarray(rgb[:, :, ::-1])
        return self._encode(rgb)

    def _encode(self, rgb: np.ndarray) -> np.ndarray:
        if self._cv2 is not None:
            ext = ".jpg" if self.format == "jpeg" else ".png"
            ok, buf = self._cv2.imencode(ext, np.ascontiguousarray(rgb[:, :, ::-1]))
            if not ok:
                raise RuntimeError(f"OpenCV could not encode a synthetic {self.format}")
            return np.asarray(buf, dtype=np.uint8).reshape(-1)
        out = io.BytesIO()
        self._pil.fromarray(rgb, "RGB").save(out, format="JPEG" if self.format == "jpeg" else "PNG")
        return np.frombuffer(out.getvalue(), dtype=np.uint8)


def _decoded(data: np.ndarray, pixels: Any) -> np.ndarray:
    """The frame the sidecar decoded: ``data`` holds ``width * height * 3`` RGB bytes."""
    text = pixels.decode() if isinstance(pixels, bytes) else str(pixels)
    width, _, height = text.partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise _invalid(f"the pixels parameter must be <width>x<height>, got {text!r}")
    shape = (int(height), int(width), 3)
    if data.size != shape[0] * shape[1] * 3:
        raise _invalid(f"FRAME holds {data.size} bytes, not the {text} RGB pixels its pixels parameter says")
    return np.array(data.reshape(shape), dtype=np.uint8, order="C", copy=True)


def _invalid(message: str) -> RuthError:
    return RuthError(INVALID_INPUT, "decode", message)
