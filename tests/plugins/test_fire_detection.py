from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from plugin_harness import NO_PERSON_PHOTOS, photo

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import scenes


@pytest.fixture(scope="module")
def fire(load_plugin):
    return load_plugin("fire_detection", "2.1.0")


def run_sequence(plugin, frames, camera_id):
    return [
        plugin(image, camera_id=camera_id, sequence_start=index == 0, timestamp_ms=timestamp_ms)
        for index, (image, timestamp_ms) in enumerate(frames)
    ]


def test_fire_detection_raises_fire_when_a_flame_flickers_and_grows(fire):
    results = run_sequence(fire, scenes.flame_sequence(), "flame")
    min_frames = fire.context.config["min_frames"]
    assert all(r["event_type"] == "no_fire" for r in results[: min_frames - 1])
    assert [r["event_type"] for r in results[-10:]] == ["fire_detected"] * 10
    last = results[-1]
    assert last["confidence"] >= 0.8
    assert last["fire_area_ratio"] > results[min_frames]["fire_area_ratio"]
    flames = [b for b in last["bounding_boxes"] if b["label"] == "fire"]
    assert flames
    x_centre = flames[0]["x"] + flames[0]["width"] / 2
    assert abs(x_centre - scenes.WIDTH * 0.45) < 40


def test_fire_detection_raises_fire_when_a_steady_flame_only_flickers(fire):
    results = run_sequence(fire, scenes.flame_sequence(growth=1.0, seed=1), "steady-flame")
    assert results[-1]["event_type"] == "fire_detected"


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param(lambda: scenes.static_orange_sequence(), id="static-orange-objects"),
        pytest.param(lambda: scenes.moving_orange_sequence(), id="orange-ball-rolling"),
        pytest.param(lambda: scenes.upright_sequence("astronaut"), id="person-in-orange-walking"),
    ],
)
def test_fire_detection_stays_quiet_when_orange_things_do_not_flicker(fire, frames):
    results = run_sequence(fire, frames(), "orange")
    assert all(r["event_type"] == "no_fire" for r in results)
    assert all(r["bounding_boxes"] == [] for r in results)


@pytest.mark.parametrize("name", NO_PERSON_PHOTOS)
def test_fire_detection_stays_quiet_when_a_photo_is_filmed_with_sensor_noise(fire, name):
    rng = np.random.default_rng(0)
    image = photo(name).astype(np.int16)
    noisy = [np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8) for _ in range(12)]
    frames = [(frame, index * 100) for index, frame in enumerate(noisy)]
    assert all(r["event_type"] == "no_fire" for r in run_sequence(fire, frames, f"photo-{name}"))


def test_fire_detection_raises_smoke_when_a_grey_plume_rises_and_spreads(fire):
    results = run_sequence(fire, scenes.smoke_sequence(), "smoke")
    assert results[-1]["event_type"] == "smoke_detected"
    assert any(b["label"] == "smoke" for b in results[-1]["bounding_boxes"])


def test_fire_detection_keeps_cameras_apart_when_their_frames_interleave(fire):
    flame, static = list(scenes.flame_sequence()), list(scenes.static_orange_sequence())
    events: dict[str, list[str]] = {"flame": [], "static": []}
    for index, (one, other) in enumerate(zip(flame, static, strict=True)):
        for camera_id, (image, timestamp_ms) in (("flame", one), ("static", other)):
            result = fire(image, camera_id=camera_id, sequence_start=index == 0, timestamp_ms=timestamp_ms)
            events[camera_id].append(result["event_type"])
    assert events["flame"][-1] == "fire_detected"
    assert set(events["static"]) == {"no_fire"}


def test_fire_detection_starts_over_when_a_sequence_starts_again(fire):
    frames = list(scenes.flame_sequence())
    assert run_sequence(fire, frames, "again")[-1]["event_type"] == "fire_detected"
    result = fire(frames[-1][0], camera_id="again", sequence_start=True, timestamp_ms=0)
    assert result["event_type"] == "no_fire" and result["frames_observed"] == 1
