"""One decode for several models, against the real tritonserver.

``dec_frame``, ``dec_batch`` and ``dec_temporal`` take JPEG frames and answer with a digest of every
pixel they were given. A request naming the three has its frame decoded once by the sidecar, and
Triton reads those pixels from the frame pool for each; the digests must be those of the pixels
each wrapper decodes itself when the frame comes to it alone.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from sidecar.client import make_models_request, result_dict
from tests.integration.test_lifecycle import V
from tests.integration.test_told_truthfully import stack
from tests.integration.test_upstreams import _all_ready, _answers

pytestmark = pytest.mark.integration

MODELS = ("dec_frame", "dec_batch", "dec_temporal")


def photo(width: int, height: int, seed: int) -> tuple[bytes, str]:
    """A JPEG of smooth gradients and noise, and the sha256 of its decoded RGB pixels."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([xs * 255 // width, ys * 255 // height, (xs + ys) % 256], axis=-1)
    pixels = np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return buffer.getvalue(), hashlib.sha256(decoded.tobytes()).hexdigest()


async def test_a_frame_for_several_models_is_decoded_once_and_each_gets_the_pixels_it_would_decode(
    triton_factory, tmp_path
):
    async with stack(triton_factory, tmp_path, list(MODELS), calibrate=False) as (sidecar, http, client):
        await _all_ready(http, *MODELS)
        frame, digest = photo(640, 480, 1)
        alone = {m: result_dict(await client.infer(m, V, frame, frame_id="a1", camera_id="cam1"))
                 for m in MODELS}  # each wrapper decodes the frame itself
        assert {a["sha256"] for a in alone.values()} == {digest}
        assert sidecar.core.pipeline.frames.decoded["frames"] == 0

        together = _answers(await client.infer_models([(m, V) for m in MODELS], frame, frame_id="t1",
                                                      camera_id="cam1"))
        assert together == alone  # the same pixels, decoded once by the sidecar
        assert sidecar.core.pipeline.frames.decoded == {"frames": 1, "reads": 3}
        assert sidecar.core.pipeline.frames.decode_off is None

        # the stream path, several frames of several sizes in a row: each decoded once
        frames = [photo(320 + 64 * n, 240, 10 + n) for n in range(4)]

        async def requests():
            for n, (data, _) in enumerate(frames):
                yield make_models_request([(m, V) for m in MODELS], data, frame_id=f"s{n}", camera_id="cam1")

        answers = [_answers(r) async for r in client.stream(requests())]
        assert len(answers) == len(frames)
        for (_, expected), answer in zip(frames, answers, strict=True):
            assert {a["sha256"] for a in answer.values()} == {expected}, answer
        assert sidecar.core.pipeline.frames.decoded == {"frames": 5, "reads": 15}
        assert sidecar.core.pool.in_use == 0  # every slot is free again

        metrics = (await http.get("/metrics")).text
        assert "ruth_frames_decoded_once_total 5.0" in metrics
        assert "ruth_decoded_frame_reads_total 15.0" in metrics


async def test_with_decode_once_off_each_model_decodes_the_frame_and_answers_the_same(
    triton_factory, tmp_path
):
    async with stack(triton_factory, tmp_path, list(MODELS), calibrate=False,
                     decode_once=False) as (sidecar, http, client):
        await _all_ready(http, *MODELS)
        frame, digest = photo(640, 480, 1)
        together = await client.infer_models([(m, V) for m in MODELS], frame, frame_id="t1", camera_id="cam1")
        assert {a["sha256"] for a in _answers(together).values()} == {digest}
        assert sidecar.core.pipeline.frames.decoded == {"frames": 0, "reads": 0}
        assert sidecar.core.pool is None  # nothing reserved in /dev/shm
