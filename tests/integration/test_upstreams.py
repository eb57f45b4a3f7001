"""Upstreams and requests for several models, against the real tritonserver.

``up_counter`` counts its own runs (one instance) and answers with the count; its dependents
``up_frame``, ``up_batch`` and ``up_temporal`` answer with what it said about their frame, so a test
sees how often it ran. The sidecar owns the plugin folder, as ``ruthgen up`` runs it.
"""

from __future__ import annotations

import asyncio
import shutil

import pytest

from sidecar.client import make_models_request, make_request, pb, result_dict
from tests.integration.test_lifecycle import FRAME, V, error_code, model, state_is, until
from tests.integration.test_told_truthfully import PLUGINS, stack

pytestmark = pytest.mark.integration

DEPENDENTS = ("up_frame", "up_batch", "up_temporal")
ALL = ("up_counter", *DEPENDENTS)


def running(triton_factory, tmp_path, plugins, **overrides):
    """The test stack without capacity calibration, whose frames up_counter would count as runs."""
    return stack(triton_factory, tmp_path, plugins, calibrate=False, **overrides)


async def _all_ready(http, *model_ids):
    for model_id in model_ids:
        await until(lambda m=model_id: state_is(http, m, "READY"), timeout=60.0)


def _answers(response) -> dict[str, dict]:
    return {
        a.model_id: dict(a.result) if a.HasField("result") else {"error": a.error} for a in response.answers
    }


async def test_an_upstream_runs_once_per_frame_for_one_call_and_for_separate_calls(triton_factory, tmp_path):
    async with running(triton_factory, tmp_path, list(ALL), upstream_memo_entries=8) as (sidecar, http,
                                                                                        client):
        await _all_ready(http, *ALL)
        models = [(m, V) for m in ALL]
        first = _answers(await client.infer_models(models, FRAME, frame_id="f1", camera_id="cam1"))
        runs = first["up_counter"]["runs"]
        for name in DEPENDENTS:  # three dependents, one run of the upstream: the named one's own
            assert first[name]["upstream_runs"] == runs and first[name]["upstream_frame"] == "f1", first
        second = _answers(await client.infer_models(models, FRAME, frame_id="f2", camera_id="cam1"))
        assert second["up_counter"]["runs"] == runs + 1  # one run for the next frame

        # the same frame asked for in three separate calls: one run
        answers = [result_dict(await client.infer(name, V, FRAME, frame_id="f3", camera_id="cam1"))
                   for name in DEPENDENTS]
        assert [a["upstream_runs"] for a in answers] == [runs + 2] * 3
        alone = result_dict(await client.infer("up_frame", V, FRAME, frame_id="f4", camera_id="cam1"))
        assert alone["upstream_runs"] == runs + 3

        for n in range(40):  # many frames: the memo keeps at most its 8 entries
            response = await client.infer("up_frame", V, FRAME, frame_id=f"many{n}", camera_id="cam2")
            assert result_dict(response)["upstream_frame"] == f"many{n}"
        memo = sidecar.core.pipeline.fanout.upstreams.memo
        assert len(memo) <= 8 and memo.bytes <= memo.max_bytes

        status = await client.status("up_frame", V)
        (found,) = status.models
        assert [(u.model_id, u.version) for u in found.upstreams] == [("up_counter", V)]
        listed = await model(http, "up_temporal")
        assert listed["upstreams"] == [{"model_id": "up_counter", "version": V}]
        assert listed["waiting_for"] is None


async def test_an_upstream_that_fails_times_out_or_goes_gives_each_dependent_a_coded_error(
    triton_factory, tmp_path
):
    async with running(triton_factory, tmp_path, list(ALL), request_timeout_ms=1500) as (_, http, client):
        await _all_ready(http, *ALL)
        models = [(m, V) for m in DEPENDENTS]
        failed = await client.infer_models(models, FRAME, frame_id="boom", camera_id="cam1")
        for answer in failed.answers:
            assert answer.error.message.startswith("upstream up_counter 1.0.0 answered INFERENCE_ERROR")
            assert error_code_of(answer) == "UPSTREAM_ERROR"
        slow = await client.infer("up_frame", V, FRAME, frame_id="slow", camera_id="cam1")
        assert error_code(slow) == "UPSTREAM_ERROR" and "answered TIMEOUT" in slow.error.message

        shutil.rmtree(tmp_path / "models" / "up_counter")  # the upstream's folder goes
        await until(lambda: _waiting(http, "up_frame"), timeout=30.0)
        gone = await client.infer_models(models, FRAME, frame_id="after", camera_id="cam1")
        for answer in gone.answers:
            assert error_code_of(answer) == "MODEL_NOT_READY"
            assert "its upstream up_counter 1.0.0 is" in answer.error.message
        health = await http.get("/readyz")
        assert health.status_code == 503  # nothing serves: every model waits for the one that went


async def test_a_dependent_added_before_its_upstream_serves_once_the_upstream_is_there(
    triton_factory, tmp_path
):
    async with running(triton_factory, tmp_path, ["up_frame"]) as (_, http, client):
        await until(lambda: state_is(http, "up_frame", "READY"), timeout=60.0)
        waiting = await model(http, "up_frame")
        assert waiting["health"] == "UNHEALTHY"
        assert waiting["waiting_for"] == "its upstream up_counter 1.0.0 is not there"
        refused = await client.infer("up_frame", V, FRAME, frame_id="early")
        assert error_code(refused) == "MODEL_NOT_READY"
        assert refused.error.message == (
            "up_frame 1.0.0 is not serving: its upstream up_counter 1.0.0 is not there"
        )

        shutil.copytree(PLUGINS / "up_counter", tmp_path / "models" / "up_counter")
        await until(lambda: state_is(http, "up_counter", "READY"), timeout=60.0)
        served = await until(lambda: _serves(client), timeout=10.0)
        assert result_dict(served)["upstream_frame"] == "late"
        assert (await model(http, "up_frame"))["waiting_for"] is None


async def test_a_cycle_of_upstreams_is_invalid_with_its_reason(triton_factory, tmp_path):
    for name, other in (("cyc_a", "cyc_b"), ("cyc_b", "cyc_a")):
        folder = tmp_path / "models" / name / V
        shutil.copytree(PLUGINS / "up_frame" / V, folder)
        text = (folder / "model.yaml").read_text().replace("up_frame", name).replace("up_counter", other)
        (folder / "model.yaml").write_text(text)
    async with running(triton_factory, tmp_path, []) as (_, http, _client):
        invalid = await until(lambda: _either_invalid(http, "cyc_a", "cyc_b"), timeout=30.0)
        assert invalid["reason"].startswith("upstream_cycle: upstreams form a cycle: ")
        assert "cyc_a 1.0.0" in invalid["reason"] and "cyc_b 1.0.0" in invalid["reason"]


async def test_hot_reload_of_the_upstream_under_load_fails_no_request(triton_factory, tmp_path):
    async with running(triton_factory, tmp_path, ["up_counter", "up_frame"]) as (_, http, client):
        await _all_ready(http, "up_counter", "up_frame")
        before = (await model(http, "up_counter"))["triton_name"]
        stop = asyncio.Event()
        failures: list[str] = []
        answered = [0]

        async def load(worker: int) -> None:
            n = 0
            while not stop.is_set():
                frame_id = f"w{worker}-{n}"
                response = await client.infer("up_frame", V, FRAME, frame_id=frame_id, camera_id="cam1")
                if response.HasField("error"):
                    failures.append(f"{error_code(response)}: {response.error.message}")
                answered[0] += 1
                n += 1

        workers = [asyncio.ensure_future(load(w)) for w in range(3)]
        await asyncio.sleep(0.5)
        code = tmp_path / "models" / "up_counter" / V / "inference.py"
        code.write_text(code.read_text().replace('"runs": 0', '"runs": 1000'))
        await until(lambda: _reloaded(http, before), timeout=60.0)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*workers)
        assert failures == [] and answered[0] > 10
        after = result_dict(await client.infer("up_frame", V, FRAME, frame_id="new", camera_id="cam1"))
        assert after["upstream_runs"] > 1000  # the new copy answers


async def test_a_temporal_dependent_keeps_each_cameras_order_on_a_stream(triton_factory, tmp_path):
    async with running(triton_factory, tmp_path, ["up_counter", "up_temporal"]) as (_, http, client):
        await _all_ready(http, "up_counter", "up_temporal")

        async def frames():
            for n in range(6):
                for camera in ("a", "b"):
                    yield make_request("up_temporal", V, FRAME, frame_id=f"{camera}{n}", camera_id=camera)
                    yield make_models_request([("up_counter", V), ("up_temporal", V)], FRAME,
                                              frame_id=f"{camera}m{n}", camera_id=f"{camera}-many")

        seen: dict[str, list[int]] = {}
        async for response in client.stream(frames()):
            if response.answers:
                answers = _answers(response)
                assert "error" not in answers["up_temporal"], answers
                seen.setdefault(response.camera_id, []).append(answers["up_temporal"]["seen"])
            else:
                assert not response.HasField("error"), response.error
                seen.setdefault(response.camera_id, []).append(result_dict(response)["seen"])
        for camera in ("a", "b", "a-many", "b-many"):
            assert sorted(seen[camera]) == [1, 2, 3, 4, 5, 6] == seen[camera], seen


def error_code_of(answer) -> str | None:
    return pb.ErrorCode.Name(answer.error.code) if answer.HasField("error") else None


async def _either_invalid(http, *model_ids):
    for model_id in model_ids:
        found = await state_is(http, model_id, "INVALID")
        if found:
            return found
    return None


async def _waiting(http, model_id):
    found = await model(http, model_id)
    return found if found and found.get("waiting_for") else None


async def _serves(client):
    response = await client.infer("up_frame", V, FRAME, frame_id="late")
    return response if response.HasField("result") else None


async def _reloaded(http, before):
    found = await model(http, "up_counter")
    return found if found and found["state"] == "READY" and found["triton_name"] != before else None

