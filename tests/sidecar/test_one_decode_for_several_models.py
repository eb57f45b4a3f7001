"""One decode for several models, in front of the fake Triton (the real path:
tests/integration/test_decode_once.py): a frame that one request sends to several models that take
it encoded is decoded once into the frame pool, every Triton request names that slot with the
``pixels`` parameter, and the slot is free again once every request has settled; where the pool
cannot be used the frame goes encoded, as before."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ruthgen.writer import build_repository
from sidecar.errors import InferenceServerUnavailable
from sidecar.main import build_core
from sidecar.request.pipeline import FrameRequest
from sidecar.settings import load_settings
from tests.sidecar.conftest import image_bytes, write_plugin

JPEG = image_bytes(64, 48)
PIXELS = np.asarray(Image.open(io.BytesIO(JPEG)).convert("RGB"))
NAMES = {"person": "person__1.0.0", "helmet": "helmet__1.0.0", "crowd": "crowd__1.0.0", "fall": "fall__1.0.0"}


@pytest.fixture(scope="module")
def decode_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sidecar-decode-once")
    models = root / "models"
    write_plugin(models, "person")
    for model_id, spec in (("helmet", {}), ("crowd", {"type": "batch"}), ("fall", {"type": "temporal"})):
        folder = write_plugin(models, model_id, **spec)
        upstream = 'upstreams:\n  - {model_id: person, version: "1.0.0"}\n'
        (folder / "model.yaml").write_text((folder / "model.yaml").read_text() + upstream)
    write_plugin(models, "still", format="png")
    repository = root / "model_repository"
    build_repository(models, repository)
    return repository


@pytest.fixture
async def runtime(decode_repository, fake_triton, request):
    overrides = getattr(request, "param", {})
    settings = load_settings(
        grpc_port=0, http_port=None, model_repository=decode_repository, triton_connect_timeout_s=0.5,
        refresh_interval_s=60.0, calibrate=False, watch_models=False, recovery_cooldown_s=60.0,
        shared_memory_pool_bytes=1024**2, **overrides,
    )
    core = build_core(settings, fake_triton)  # type: ignore[arg-type]
    await core.start()
    yield core
    await core.stop()


def many(models: list[str], data: bytes = JPEG, fmt: str = "jpeg", frame_id: str = "d1") -> FrameRequest:
    request = FrameRequest(frame_id, "cam1", "", "", data, fmt)
    request.models = [(m, "1.0.0") for m in models]
    return request


def reads_pixels(core, seen: dict[str, np.ndarray]):
    """A behaviour that keeps, per model, the pixels its request names in the pool (read while the
    request is in flight) and answers with the model's name."""

    def behaviour(request) -> bytes:
        (tensor,) = request.inputs
        params = tensor.parameters
        assert params["shared_memory_region"].string_param == core.pool.name
        offset = params["shared_memory_offset"].int64_param
        size = params["shared_memory_byte_size"].int64_param
        seen[request.model_name] = np.frombuffer(core.pool._view[offset:offset + size], np.uint8).copy()
        return json.dumps({"model": request.model_name}).encode()

    return behaviour


def pixels_parameter(request) -> str:
    if "batch" in request.parameters:
        return json.loads(request.parameters["batch"].string_param)[0]["pixels"]
    return request.parameters["pixels"].string_param


async def test_a_frame_for_several_models_is_decoded_once_and_every_request_reads_its_pixels(
    runtime, fake_triton
):
    seen: dict[str, np.ndarray] = {}
    for name in NAMES.values():
        fake_triton.behaviours[name] = reads_pixels(runtime, seen)
    outcome = await runtime.infer(many(["helmet", "crowd", "fall", "person"]))
    assert [a.error for a in outcome.answers] == [None] * 4
    assert runtime.pipeline.frames.decoded == {"frames": 1, "reads": 4}  # person ran once, for all of them
    assert len(fake_triton.requests) == 4
    for sent in fake_triton.requests:
        assert not sent.raw_input_contents  # the frame does not cross the second gRPC hop
        assert pixels_parameter(sent) == "64x48"
        assert np.array_equal(seen[sent.model_name], PIXELS.reshape(-1))
    shape = {r.model_name: list(r.inputs[0].shape) for r in fake_triton.requests}
    assert shape[NAMES["crowd"]] == [1, 64 * 48 * 3] and shape[NAMES["helmet"]] == [64 * 48 * 3]
    assert runtime.pool.in_use == 0  # every request settled: the slot is free


async def test_a_frame_only_one_model_takes_encoded_goes_encoded(runtime, fake_triton):
    outcome = await runtime.infer(many(["person", "still"]))  # still takes PNG: INVALID_INPUT alone
    assert [a.error is None for a in outcome.answers] == [True, False]
    (sent,) = fake_triton.requests
    assert sent.raw_input_contents[0] == JPEG and "pixels" not in sent.parameters
    assert runtime.pipeline.frames.decoded == {"frames": 0, "reads": 0}


async def test_a_frame_that_does_not_decode_goes_encoded_to_each_model(runtime, fake_triton):
    corrupt = JPEG[:200] + bytes(len(JPEG) - 200)  # a valid header, no image behind it
    outcome = await runtime.infer(many(["person", "helmet"], corrupt))
    assert [a.error for a in outcome.answers] == [None, None]  # the fake does not decode: it answers
    assert [r.raw_input_contents[0] for r in fake_triton.requests] == [corrupt, corrupt]
    assert runtime.pipeline.frames.decoded["frames"] == 0 and runtime.pool.in_use == 0


@pytest.mark.parametrize("runtime", [{"decode_once": False}], indirect=True)
async def test_decode_once_off_sends_the_frame_encoded_to_each_model(runtime, fake_triton):
    outcome = await runtime.infer(many(["person", "helmet"]))
    assert [a.error for a in outcome.answers] == [None, None]
    assert [r.raw_input_contents[0] for r in fake_triton.requests] == [JPEG, JPEG]
    assert runtime.pipeline.frames.decode_off == "decode_once is off"


async def test_when_triton_cannot_read_the_pool_frames_go_encoded_and_the_pool_is_given_up(
    runtime, fake_triton, caplog
):
    async def refuse(name: str, key: str, byte_size: int) -> None:
        raise InferenceServerUnavailable(f"cannot register shared memory {name}: Unable to open {key}")

    fake_triton.register_system_shared_memory = refuse
    pool_file = Path("/dev/shm") / runtime.pool.name
    outcome = await runtime.infer(many(["person", "helmet"]))
    assert [a.error for a in outcome.answers] == [None, None]
    assert [r.raw_input_contents[0] for r in fake_triton.requests] == [JPEG, JPEG]
    assert "cannot read the frame pool" in runtime.pipeline.frames.decode_off
    assert "Triton must share the sidecar's /dev/shm" in caplog.text
    assert not pool_file.exists()  # its memory is given back
    await runtime.infer(many(["person", "helmet"], frame_id="d2"))
    assert runtime.pipeline.frames.decoded["frames"] == 0  # not tried again


async def test_while_triton_is_down_a_frame_goes_encoded_and_decoding_is_tried_again(runtime, fake_triton):
    register = fake_triton.register_system_shared_memory

    async def down(name: str, key: str, byte_size: int) -> None:
        raise InferenceServerUnavailable("cannot register shared memory: connection refused")

    fake_triton.register_system_shared_memory = down
    fake_triton.ready = False
    await runtime.pipeline.fanout.infer_many(many(["person", "helmet"]))
    assert runtime.pipeline.frames.decode_off is None
    fake_triton.register_system_shared_memory = register
    fake_triton.ready = True
    outcome = await runtime.infer(many(["person", "helmet"], frame_id="d2"))
    assert [a.error for a in outcome.answers] == [None, None]
    assert runtime.pipeline.frames.decoded == {"frames": 1, "reads": 2}


@pytest.mark.parametrize("runtime", [{"shared_memory_reuse_delay_s": 0.05}], indirect=True)
async def test_a_slot_whose_request_timed_out_is_reused_only_after_the_delay(runtime, fake_triton):
    fake_triton.behaviours[NAMES["helmet"]] = lambda r: None  # never answers
    request = many(["person", "helmet"])
    request.timeout_ms = 100
    outcome = await runtime.infer(request)
    assert [a.error is None for a in outcome.answers] == [True, False]
    assert runtime.pool.in_use > 0  # Triton might still read it
    for _ in range(500):
        if runtime.pool.in_use == 0:
            break
        await asyncio.sleep(0.01)
    assert runtime.pool.in_use == 0
