"""Decoding FRAME tensors and the synthetic warmup input, with Pillow and (when present) OpenCV."""

from __future__ import annotations

import numpy as np
import pytest
from ruth_decode import Decoder
from ruth_errors import RuthError
from wrapper_testlib import encode, solid


def decoder(fmt: str, backend: str, **spec: int) -> Decoder:
    if backend == "cv2":
        import cv2  # noqa: F401  (installed by `make setup`: its absence must fail, not skip)
    dec = Decoder(
        {"format": fmt, "min_width": spec.get("min_width", 1), "min_height": spec.get("min_height", 1)}
    )
    if backend in ("pillow", "numpy"):
        dec._cv2 = None
    assert dec.backend == backend
    return dec


@pytest.mark.parametrize("backend", ["pillow", "cv2"])
@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_decoder_returns_owned_rgb_array_when_bytes_are_encoded(fmt, backend):
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:, :15] = (250, 0, 0)
    rgb[:, 15:] = (0, 0, 250)
    image = decoder(fmt, backend).decode(encode(rgb, fmt)[None, :])
    assert image.shape == (20, 30, 3) and image.dtype == np.uint8
    assert image.flags.c_contiguous and image.flags.owndata and image.flags.writeable
    assert np.abs(image[10, 2].astype(int) - (250, 0, 0)).max() < 8
    assert np.abs(image[10, 28].astype(int) - (0, 0, 250)).max() < 8


@pytest.mark.parametrize("fmt", ["jpeg", "png", "raw_rgb", "raw_bgr"])
def test_decoder_synthetic_input_decodes_to_the_minimum_size(fmt):
    dec = Decoder({"format": fmt, "min_width": 17, "min_height": 9})
    image = dec.decode(dec.synthetic())
    assert image.shape == (9, 17, 3)
    assert image[0, -1, 0] > 200 and image[-1, 0, 1] > 200  # the gradient survives, in RGB order


def test_decoder_copies_raw_pixels_so_the_plugin_may_keep_them():
    source = solid(4, 4, (1, 2, 3))
    image = Decoder({"format": "raw_rgb"}).decode(source)
    source[:] = 0
    assert image[0, 0].tolist() == [1, 2, 3]


def test_decoder_refuses_png_bytes_for_a_jpeg_model():
    with pytest.raises(RuthError, match="FRAME is not jpeg data"):
        Decoder({"format": "jpeg"}).decode(encode(solid(4, 4, (0, 0, 0)), "png"))


@pytest.mark.parametrize("backend", ["numpy", "cv2"])
def test_decoder_turns_bgr_pixels_into_a_new_rgb_array(backend):
    dec = decoder("raw_bgr", backend)
    bgr = np.zeros((6, 5, 3), np.uint8)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 200, 100, 7
    image = dec.decode(bgr[None, ...])
    assert image[3, 2].tolist() == [7, 100, 200]
    assert image.flags.c_contiguous and image.flags.owndata


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_pixels_the_sidecar_decoded_are_taken_as_they_are_for_an_encoded_model(fmt):
    rgb = (np.arange(6 * 5 * 3) % 251).astype(np.uint8).reshape(6, 5, 3)
    flat = rgb.reshape(1, -1).copy()  # FRAME of a batched model: [1, w*h*3]
    image = Decoder({"format": fmt, "min_width": 2, "min_height": 2}).decode(flat, "5x6")
    flat[:] = 0  # the plugin's frame is its own copy, not the pool's memory
    assert np.array_equal(image, rgb) and image.flags.c_contiguous and image.flags.owndata


@pytest.mark.parametrize(
    ("pixels", "spec", "message"),
    [
        ("5x7", {}, "holds 90 bytes, not the 5x7 RGB pixels"),
        ("5 by 6", {}, "must be <width>x<height>"),
        ("5x6", {"min_width": 8}, "smaller than the minimum 8x1"),
    ],
)
def test_pixels_that_do_not_match_their_parameter_or_the_contract_are_invalid_input(pixels, spec, message):
    flat = np.zeros(6 * 5 * 3, np.uint8)
    with pytest.raises(RuthError, match=message):
        Decoder({"format": "jpeg", **spec}).decode(flat, pixels)
