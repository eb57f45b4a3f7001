"""sidecar.fleet in front of in-process sidecars, each with its own fake Triton, on 127.0.0.2, .3, ...
(one port, as the pods behind a headless Service): cameras pinned by rendezvous hashing, frames of a
runtime that stops or drains answered once by the cameras' next runtimes, sequence starts at the move,
a runtime that does not serve a model never gets it, DNS and refused endpoints said clearly, then
recovered from. tests/integration/test_fleet_runtimes.py proves the same with real runtimes."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict

import pytest

from sidecar.client import make_models_request, make_request, pb
from sidecar.fleet import Answer, Fleet
from sidecar.fleet.placement import placement
from sidecar.main import Sidecar, build_core
from tests.loopback import HOSTS as LOOPBACK_HOSTS
from tests.loopback import free_port_on
from tests.sidecar.conftest import FakeTriton, image_bytes

JPEG = image_bytes(32, 32)
CAMERAS = [f"cam-{n:02d}" for n in range(24)]
NAMES = {n: f"runtime-{n}" for n in "abcd"}
HOSTS = dict(zip("abcd", LOOPBACK_HOSTS, strict=False))
TRACKER = ("tracker", "1.0.0")
ALPHA = ("alpha", "1.0.0")


class Runtimes:
    """Sidecars named runtime-a.. on 127.0.0.2.., each with its own fake Triton."""

    def __init__(self, settings, port: int) -> None:
        self.settings = settings
        self.port = port
        self.running: dict[str, Sidecar] = {}
        self.tritons: dict[str, FakeTriton] = {}

    async def start(self, name: str, fail: tuple[str, ...] = ()) -> Sidecar:
        triton = FakeTriton()
        triton.delays = {"tracker__1.0.0": 0.01, "alpha__1.0.0": 0.01}
        for model in fail:
            triton.load_failures[model] = "does not load on this runtime"
        settings = self.settings.model_copy(update={
            "runtime_id": NAMES[name], "grpc_host": HOSTS[name], "grpc_port": self.port,
            "shutdown_drain_s": 5.0,
        })
        sidecar = Sidecar(settings, build_core(settings, triton))
        await sidecar.start()
        self.running[name], self.tritons[name] = sidecar, triton
        return sidecar

    async def stop(self, name: str) -> None:
        await self.running.pop(name).stop(grace=0)

    def targets(self, *names: str) -> list[str]:
        return [f"{HOSTS[n]}:{self.port}" for n in names]

    def target(self, name: str) -> str:
        return f"{HOSTS[name]}:{self.port}"

    def sequence_starts(self, name: str, camera: str) -> list[bool]:
        return [r.parameters["sequence_start"].bool_param for r in self.tritons[name].requests
                if r.model_name == "tracker__1.0.0" and r.parameters["camera_id"].string_param == camera]


@pytest.fixture
async def runtimes(settings):
    fleet_runtimes = Runtimes(settings, free_port_on(list(HOSTS.values())))
    yield fleet_runtimes
    for name in list(fleet_runtimes.running):
        await fleet_runtimes.stop(name)


def request(model: tuple[str, str], camera: str, n: int) -> pb.InferenceRequest:
    return make_request(*model, JPEG, frame_id=f"{camera}/{n}", camera_id=camera)


async def cameras_streaming(
    fleet: Fleet, model: tuple[str, str], frames: int, midway=None, at: int = 10
) -> dict[str, list[Answer]]:
    """Each camera sends ``frames`` frames, one at a time; ``midway`` runs, while they go on, once every
    camera has had ``at`` of them answered."""
    answers: dict[str, list[Answer]] = defaultdict(list)
    there: list[str] = []
    all_there = asyncio.Event()

    async def camera(name: str) -> None:
        for n in range(frames):
            if n == at:
                there.append(name)
                if len(there) == len(CAMERAS):
                    all_there.set()
            answers[name].append(await fleet.infer(request(model, name, n)))

    tasks = [asyncio.create_task(camera(c)) for c in CAMERAS]
    if midway is not None:
        await all_there.wait()
        await midway()
    await asyncio.gather(*tasks)
    return answers


def runtime_of(answers: list[Answer]) -> list[str]:
    return [a.runtime for a in answers]


async def test_each_camera_stays_on_the_runtime_its_hash_picks(runtimes):
    for name in "abc":
        await runtimes.start(name)
    async with Fleet(runtimes.targets("a", "b", "c")) as fleet:
        await fleet.wait_ready([ALPHA], 5)
        answers = await cameras_streaming(fleet, ALPHA, 5)
    expected = placement(CAMERAS, [NAMES[n] for n in "abc"])
    for camera, got in answers.items():
        assert [a.ok for a in got] == [True] * 5
        assert runtime_of(got) == [expected[camera]] * 5
        assert not any(a.resent or a.moved for a in got)
    assert set(expected.values()) == {NAMES[n] for n in "abc"}


async def test_a_runtime_that_does_not_serve_the_model_never_gets_its_cameras(runtimes):
    await runtimes.start("a")
    await runtimes.start("b")
    await runtimes.start("c", fail=("tracker__1.0.0",))
    async with Fleet(runtimes.targets("a", "b", "c")) as fleet:
        await fleet.wait_ready([TRACKER, ALPHA], 5)
        tracked = await cameras_streaming(fleet, TRACKER, 3)
        detected = await cameras_streaming(fleet, ALPHA, 1)
    on = Counter(a.runtime for got in tracked.values() for a in got)
    assert set(on) <= {NAMES["a"], NAMES["b"]} and sum(on.values()) == 24 * 3
    assert not [r for r in runtimes.tritons["c"].requests if r.model_name == "tracker__1.0.0"]
    assert NAMES["c"] in {got[0].runtime for got in detected.values()}  # it gets cameras of what it serves


@pytest.mark.parametrize("how", ["stopped", "drained"])
async def test_a_runtime_that_goes_has_its_frames_answered_once_by_the_cameras_next_runtimes(runtimes, how):
    for name in "abc":
        await runtimes.start(name)
    before = placement(CAMERAS, [NAMES[n] for n in "abc"])
    after = placement(CAMERAS, [NAMES[n] for n in "ac"])

    async def runtime_b_goes() -> None:
        if how == "stopped":
            await runtimes.stop("b")  # its streams break at once
        else:
            await runtimes.running["b"].core.drain(5.0)

    async with Fleet(runtimes.targets("a", "b", "c")) as fleet:
        await fleet.wait_ready([TRACKER], 5)
        answers = await cameras_streaming(fleet, TRACKER, 30, midway=runtime_b_goes, at=10)
    for camera, got in answers.items():
        assert [a.response.frame_id for a in got] == [f"{camera}/{n}" for n in range(30)]
        assert [a.ok for a in got] == [True] * 30, [a.response.error.message for a in got if not a.ok]
        if before[camera] != NAMES["b"]:
            assert runtime_of(got) == [before[camera]] * 30  # the others' cameras stay
            continue
        moved = [n for n, a in enumerate(got) if a.moved]
        assert len(moved) == 1 and runtime_of(got)[moved[0]:] == [after[camera]] * (30 - moved[0])
        assert set(runtime_of(got)[: moved[0]]) <= {NAMES["b"]}
        # the camera's sequence starts once where it moved, with its first frame there
        target = next(n for n in "ac" if NAMES[n] == after[camera])
        assert runtimes.sequence_starts(target, camera) == [True] + [False] * (30 - moved[0] - 1)
    resent = [a for got in answers.values() for a in got if a.resent]
    if how == "stopped":  # it went with frames in flight: they were answered by the next runtimes
        assert resent and {a.runtime for a in resent} <= {NAMES["a"], NAMES["c"]}


async def test_a_fourth_runtime_takes_about_a_quarter_of_the_cameras_and_the_rest_stay(runtimes):
    for name in "abc":
        await runtimes.start(name)
    addresses = {n: HOSTS[n] for n in "abc"}

    async def resolve(host: str, port: int) -> list[str]:
        assert host == "ruth-runtime-headless.test"
        return list(addresses.values())

    async with Fleet(f"dns:///ruth-runtime-headless.test:{runtimes.port}", resolver=resolve,
                     resolve_interval_s=0.2) as fleet:
        await fleet.wait_ready([ALPHA], 5)
        first = {c: a[0].runtime for c, a in (await cameras_streaming(fleet, ALPHA, 1)).items()}
        await runtimes.start("d")
        addresses["d"] = HOSTS["d"]
        while NAMES["d"] not in {r.runtime_id for r in fleet.runtimes() if r.up}:
            await asyncio.sleep(0.05)
        second = {c: a[0].runtime for c, a in (await cameras_streaming(fleet, ALPHA, 1)).items()}
    moved = [c for c in CAMERAS if first[c] != second[c]]
    assert 0.15 <= len(moved) / len(CAMERAS) <= 0.40
    assert {second[c] for c in moved} == {NAMES["d"]}  # they move to the new runtime, nowhere else


async def test_a_dns_name_that_resolves_to_nothing_is_said_then_its_runtimes_are_used(runtimes):
    await runtimes.start("a")
    addresses: list[str] = []
    lookups = []

    async def resolve(host: str, port: int) -> list[str]:
        lookups.append(host)
        return list(addresses)

    async with Fleet(f"dns:///ruth-runtime-headless.test:{runtimes.port}", resolver=resolve,
                     resolve_interval_s=10, health_interval_s=0.1) as fleet:
        await asyncio.sleep(0.5)
        assert 1 <= len(lookups) <= 10  # looked up again at most once a round while nothing is found
        refused = await fleet.infer(request(ALPHA, "cam-00", 0))
        assert refused.response.error.code == pb.MODEL_NOT_READY
        said = refused.response.error.message
        assert "the DNS name ruth-runtime-headless.test resolves to no address" in said
        addresses.append(HOSTS["a"])
        await fleet.wait_ready([ALPHA], 5)
        answer = await fleet.infer(request(ALPHA, "cam-00", 1))
    assert answer.ok and answer.runtime == NAMES["a"]


async def test_a_real_dns_name_that_does_not_exist_is_said():
    async with Fleet("dns:///no-such-runtime.invalid:50051") as fleet:
        answer = await fleet.infer(request(ALPHA, "cam-00", 0))
    assert answer.response.error.code == pb.MODEL_NOT_READY
    assert "the DNS name no-such-runtime.invalid does not resolve" in answer.response.error.message


async def test_an_endpoint_that_refuses_is_said_then_used_once_it_listens(runtimes):
    async with Fleet(runtimes.targets("a"), health_interval_s=0.1) as fleet:
        refused = await fleet.infer(request(ALPHA, "cam-00", 0))
        assert refused.response.error.code == pb.MODEL_NOT_READY
        said = refused.response.error.message
        assert f"{runtimes.target('a')} does not answer its health check (UNAVAILABLE" in said
        await runtimes.start("a")
        await fleet.wait_ready([ALPHA], 10)
        answer = await fleet.infer(request(ALPHA, "cam-00", 1))
    assert answer.ok and answer.runtime == NAMES["a"]


async def test_a_frame_id_already_in_flight_is_refused_and_the_first_still_answered(runtimes):
    await runtimes.start("a")
    runtimes.tritons["a"].delays["alpha__1.0.0"] = 0.2
    async with Fleet(runtimes.targets("a")) as fleet:
        await fleet.wait_ready([ALPHA], 5)
        first = asyncio.create_task(fleet.infer(request(ALPHA, "cam-00", 0)))
        await asyncio.sleep(0.05)
        again = await fleet.infer(request(ALPHA, "cam-00", 0))
        error = again.response.error
        assert error.code == pb.INVALID_INPUT and "already in flight" in error.message
        assert (await first).ok


async def test_a_request_for_several_models_goes_to_a_runtime_that_serves_them_all(runtimes):
    await runtimes.start("a")
    await runtimes.start("b", fail=("tracker__1.0.0",))
    async with Fleet(runtimes.targets("a", "b")) as fleet:
        await fleet.wait_ready([TRACKER, ALPHA], 5)
        for camera in CAMERAS:
            request = make_models_request([ALPHA, TRACKER], JPEG, frame_id=f"{camera}/0", camera_id=camera)
            answer = await fleet.infer(request)
            assert answer.runtime == NAMES["a"]  # runtime-b does not serve the tracker
            assert [(m.model_id, m.HasField("error")) for m in answer.response.answers] == [
                ("alpha", False), ("tracker", False)]


async def test_a_frame_a_runtime_did_not_run_its_model_not_ready_goes_to_the_next_runtime(runtimes):
    for name in "ab":
        await runtimes.start(name)
    stopping = "Server is stopping, scheduler for model has stopped accepting new inference requests"
    runtimes.tritons["b"].behaviours["alpha__1.0.0"] = lambda request: stopping  # its Triton got SIGTERM
    async with Fleet(runtimes.targets("a", "b")) as fleet:
        await fleet.wait_ready([ALPHA], 5)
        answers = await cameras_streaming(fleet, ALPHA, 3)
    on_b = placement(CAMERAS, [NAMES["a"], NAMES["b"]])
    for camera, got in answers.items():
        assert [a.ok for a in got] == [True] * 3 and {a.runtime for a in got} == {NAMES["a"]}
        if on_b[camera] == NAMES["b"]:
            assert got[0].resent  # the first went to runtime-b, which did not run it
