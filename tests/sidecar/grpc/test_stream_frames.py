"""ruthstack.infer.stream_frames, what ``ruthgen infer`` sends, against the in-process sidecar and the
fake Triton: one camera's frames in order on one InferStream, in the model's format, within a window."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from ruthstack.infer import WINDOW, StreamOptions, own_camera_id, stream_frames
from ruthstack.media import SourceFrame, image_frames
from sidecar.request.messages import sequence_number
from tests.sidecar.conftest import image_bytes


def rgb_frames(count: int, width: int = 40, height: int = 30) -> list[SourceFrame]:
    return [SourceFrame(i, f"{i:06d}", i * 100.0, rgb=np.full((height, width, 3), i, np.uint8))
            for i in range(count)]


async def send(sidecar, model_id: str, frames, **options) -> list[tuple[str, dict]]:
    answers: list[tuple[str, dict]] = []
    settings = StreamOptions(f"127.0.0.1:{sidecar.port}", model_id, "1.0.0", **options)
    await asyncio.to_thread(stream_frames, settings, frames, lambda f, a: answers.append((f.frame_id, a)))
    return answers


def sent_to(fake_triton, name: str) -> list:
    return [r for r in fake_triton.requests if r.model_name == name]


async def test_images_reach_a_temporal_model_as_one_cameras_sequence_in_order(sidecar, fake_triton, tmp_path):
    paths = []
    for n in range(40):
        path = tmp_path / f"f{n:02d}.jpg"
        path.write_bytes(image_bytes(32, 32))
        paths.append(path)
    fake_triton.delays["tracker__1.0.0"] = 0.02  # answers lag: the window fills
    answers = await send(sidecar, "tracker", image_frames(paths), camera_id="cam-7")
    assert sorted(frame_id for frame_id, _ in answers) == [p.name for p in paths]
    assert [a.get("error") for _, a in answers] == [None] * 40  # never OVERLOADED (the sidecar's window: 32)
    assert {a["camera_id"] for _, a in answers} == {"cam-7"}
    sent = sent_to(fake_triton, "tracker__1.0.0")
    assert [r.parameters["frame_id"].string_param for r in sent] == [p.name for p in paths]
    assert {r.parameters["camera_id"].string_param for r in sent} == {"cam-7"}
    assert {r.parameters["sequence_id"].int64_param for r in sent} == {sequence_number("cam-7")}
    assert [r.parameters["sequence_start"].bool_param for r in sent] == [True] + [False] * 39
    assert WINDOW < 32


async def test_video_frames_are_encoded_in_the_format_the_model_takes(sidecar, fake_triton):
    answers = await send(sidecar, "beta", rgb_frames(3))  # beta takes png
    assert [a.get("error") for _, a in answers] == [None] * 3
    assert all(r.raw_input_contents[0].startswith(b"\x89PNG") for r in sent_to(fake_triton, "beta__1.0.0"))
    answers = await send(sidecar, "rawcam", rgb_frames(2))  # raw_rgb: the pixels and their size
    assert [a.get("error") for _, a in answers] == [None] * 2
    (first, _) = sent_to(fake_triton, "rawcam__1.0.0")
    assert list(first.inputs[0].shape) == [30, 40, 3] and len(first.raw_input_contents[0]) == 40 * 30 * 3


async def test_frames_carry_the_runs_clock_at_their_position_when_it_is_known(sidecar, fake_triton):
    before = time.time() * 1000
    await send(sidecar, "alpha", rgb_frames(3))
    stamps = [int(r.parameters["timestamp_ms"].string_param) for r in sent_to(fake_triton, "alpha__1.0.0")]
    assert stamps[1] - stamps[0] == stamps[2] - stamps[1] == 100
    assert before - 1 <= stamps[0] <= time.time() * 1000


async def test_frames_are_paced_at_the_given_rate(sidecar):
    started = time.monotonic()
    answers = await send(sidecar, "alpha", rgb_frames(6), fps=20.0)
    assert len(answers) == 6
    assert time.monotonic() - started >= 5 / 20


async def test_an_unknown_model_answers_every_frame_with_its_code(sidecar):
    answers = await send(sidecar, "nope", rgb_frames(2))
    assert [a["error"]["code"] for _, a in answers] == ["MODEL_NOT_FOUND"] * 2


def test_own_camera_id_is_new_each_run_and_short_enough_for_triton():
    ids = {own_camera_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i) <= 20 for i in ids)  # Triton 2.51 aborts on a longer sequence id string


async def test_frames_reach_several_models_in_one_request_each_with_an_answer_per_model(sidecar, fake_triton):
    answers = await send(sidecar, "alpha", rgb_frames(3), camera_id="cam-m",
                         models=[("alpha", "1.0.0"), ("tracker", "1.0.0")])
    assert [frame_id for frame_id, _ in sorted(answers)] == ["000000", "000001", "000002"]
    for _, answer in answers:
        answered = [(a["model_id"], a.get("error")) for a in answer["answers"]]
        assert answered == [("alpha", None), ("tracker", None)]
    sent = sent_to(fake_triton, "tracker__1.0.0")
    assert [r.parameters["frame_id"].string_param for r in sent] == ["000000", "000001", "000002"]
    assert len(sent_to(fake_triton, "alpha__1.0.0")) == 3
