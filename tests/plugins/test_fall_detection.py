from __future__ import annotations

import sys
from pathlib import Path

import pytest
from plugin_harness import assert_same_boxes, photo, sides

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import scenes

#: Every clip the tests below send (one camera's frames, in order).
PEOPLE, NOBODY = ("camera", "astronaut"), ("coffee", "chelsea", "rocket")
CLIPS = {
    **{f"fall {name}": lambda name=name: scenes.fall_sequence(name) for name in PEOPLE},
    **{f"upright {name}": lambda name=name: scenes.upright_sequence(name) for name in PEOPLE},
    "lie down slowly": lambda: scenes.lie_down_slowly_sequence("astronaut"),
    "nobody": lambda: [(photo(name), index * 100) for index, name in enumerate(NOBODY)],
}


@pytest.fixture(scope="module")
def fall(load_plugin):
    return load_plugin("fall_detection", "1.0.0")


@pytest.fixture(scope="module")
def island(load_island):
    return load_island("fall_detection", "1.0.0")


def run_sequence(plugin, frames, camera_id):
    results = []
    for index, (image, timestamp_ms) in enumerate(frames):
        start = index == 0
        results.append(plugin(image, camera_id=camera_id, sequence_start=start, timestamp_ms=timestamp_ms))
    return results


@pytest.fixture(scope="module")
def posture(fall):
    return sys.modules[f"{fall.package}.posture"]


@pytest.mark.parametrize("name", ["camera", "astronaut"])
def test_fall_detection_raises_fall_detected_when_an_upright_person_ends_up_lying(fall, name):
    results = run_sequence(fall, scenes.fall_sequence(name), f"fall-{name}")
    events = [r["event_type"] for r in results]
    assert "fall_detected" not in events[:8]  # the upright part
    assert events[-1] == "fall_detected"
    last = results[-1]
    assert last["posture"] == "lying" and last["torso_angle_deg"] >= 60
    assert last["confidence"] >= 0.5
    assert any(b["label"] == "fallen_person" for b in last["bounding_boxes"])


@pytest.mark.parametrize("name", ["camera", "astronaut"])
def test_fall_detection_never_raises_a_fall_when_the_person_stays_upright(fall, name):
    results = run_sequence(fall, scenes.upright_sequence(name), f"upright-{name}")
    assert all(r["event_type"] != "fall_detected" for r in results)
    assert results[-1]["event_type"] == "no_fall"
    assert all(r["bounding_boxes"] for r in results)


def test_fall_detection_raises_no_fall_when_the_person_lies_down_slowly(fall):
    results = run_sequence(fall, scenes.lie_down_slowly_sequence("astronaut"), "slow")
    assert results[-1]["posture"] == "lying"
    assert all(r["event_type"] != "fall_detected" for r in results)


def test_fall_detection_keeps_cameras_apart_when_their_frames_interleave(fall):
    falling = list(scenes.fall_sequence("camera"))
    standing = list(scenes.upright_sequence("astronaut", frames=len(falling)))
    by_camera: dict[str, list[str]] = {"a": [], "b": []}
    for index, (one, other) in enumerate(zip(falling, standing, strict=True)):
        for camera_id, (image, timestamp_ms) in (("a", one), ("b", other)):
            result = fall(image, camera_id=camera_id, sequence_start=index == 0, timestamp_ms=timestamp_ms)
            by_camera[camera_id].append(result["event_type"])
    assert by_camera["a"][-1] == "fall_detected"
    assert "fall_detected" not in by_camera["b"]


def test_fall_detection_forgets_the_past_when_a_sequence_starts_again(fall):
    frames = list(scenes.fall_sequence("astronaut"))
    assert run_sequence(fall, frames, "restart")[-1]["event_type"] == "fall_detected"
    lying_only = frames[-4:]
    results = run_sequence(fall, lying_only, "restart")  # sequence_start on the first: a new stream
    assert [r["event_type"] for r in results] == ["person_detected"] * len(lying_only)


def test_fall_detection_reports_no_fall_and_no_box_when_nobody_is_in_the_frame(fall):
    for index, name in enumerate(["coffee", "chelsea", "rocket"]):
        result = fall(photo(name), camera_id="empty", sequence_start=index == 0, timestamp_ms=index * 100)
        assert result == {
            "event_type": "no_fall", "confidence": 1.0, "posture": "absent", "torso_angle_deg": None,
            "frames_observed": 0, "bounding_boxes": [],
        }


def test_fall_detection_counts_time_at_the_configured_rate_when_frames_carry_no_timestamp(fall):
    results = []
    for index, (image, _) in enumerate(scenes.fall_sequence("astronaut")):
        results.append(fall(image, camera_id="no-clock", sequence_start=index == 0))
    assert results[-1]["event_type"] == "fall_detected"


def test_fall_detection_judges_the_largest_person_person_detection_found_in_the_same_frame(fall):
    image, timestamp_ms = next(iter(scenes.upright_sequence("astronaut")))
    frame = fall.frame(image, camera_id="upstream", sequence_start=True, timestamp_ms=timestamp_ms)
    result = fall.run(frame)
    assert sides(result["bounding_boxes"]) == sides(frame.upstreams["person_detection"]["bounding_boxes"])


def test_fall_detection_looks_for_a_pose_in_the_whole_frame_when_it_has_no_upstream_result(fall):
    # the warmup frame: frame.upstreams is empty; MediaPipe still finds the person
    frame = fall.frame(photo("camera"), camera_id="warmup", sequence_start=True, upstreams=False)
    result = fall.run(frame)
    assert result["event_type"] == "person_detected" and result["posture"] == "upright"
    assert result["frames_observed"] == 1
    assert len(result["bounding_boxes"]) == 1


@pytest.mark.parametrize("name", list(CLIPS))
def test_fall_detection_answers_as_with_its_own_detector_when_given_person_detections_boxes(
    fall, island, name
):
    frames = list(CLIPS[name]())
    shared = run_sequence(fall, frames, f"shared-{name}")
    alone = run_sequence(island, frames, f"alone-{name}")  # benchmarks/fixtures/islands: its own detector
    keys = ("event_type", "posture", "frames_observed")
    assert [{k: r[k] for k in keys} for r in shared] == [{k: r[k] for k in keys} for r in alone]
    for ours, theirs in zip(shared, alone, strict=True):
        assert abs(ours["confidence"] - theirs["confidence"]) <= 0.05
        assert_same_boxes(ours["bounding_boxes"], theirs["bounding_boxes"])


# The rule alone, on hand-made observations.

def obs(posture, t, angle, hip_y, aspect=0.6, scale=100.0):
    return posture.Observation(t=t, torso_angle_deg=angle, aspect=aspect, hip_y=hip_y, scale=scale)


def test_posture_rule_needs_a_fast_enough_hip_drop(posture):
    rule = posture.Rule()
    fast, slow = posture.CameraTrack(rule), posture.CameraTrack(rule)
    for i in range(4):
        fast.update(obs(posture, i * 0.1, 10, 300), i * 0.1)
        slow.update(obs(posture, i * 0.1, 10, 300), i * 0.1)
    # fast: 60 px (0.6 torso lengths) in 0.3 s; slow: the same drop over 1.9 s (0.32 per second)
    for t in (0.6, 0.7):
        decision = fast.update(obs(posture, t, 85, 360, aspect=1.5), t)
    assert decision.event_type == "fall_detected"
    for t in (2.2, 2.3):
        decision = slow.update(obs(posture, t, 85, 360, aspect=1.5), t)
    assert decision.event_type == "no_fall"


def test_posture_rule_needs_the_hips_to_drop_not_only_the_torso_to_tilt(posture):
    track = posture.CameraTrack(posture.Rule())
    for i in range(4):
        track.update(obs(posture, i * 0.1, 10, 300), i * 0.1)
    for t in (0.5, 0.6, 0.7):
        decision = track.update(obs(posture, t, 80, 305, aspect=1.5), t)
    assert decision.event_type == "no_fall"


def test_posture_rule_reads_its_thresholds_from_config(posture):
    rule = posture.Rule.from_config({"lying_min_deg": 70, "confirm_frames": 3, "unknown_key": 1})
    assert rule.lying_min_deg == 70.0 and rule.confirm_frames == 3
    assert rule.posture(obs(posture, 0, 65, 0)) == "unknown"
