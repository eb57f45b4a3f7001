"""crowd_count 1.0.0 in-process: person_detection's boxes per frame, a count per frame, a total per batch."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from plugin_harness import NO_PERSON_PHOTOS, PERSON_PHOTOS, assert_same_boxes, photo, sides


@pytest.fixture(scope="module")
def counter(load_plugin):
    return load_plugin("crowd_count", "1.0.0")


@pytest.fixture(scope="module")
def island(load_island):
    return load_island("crowd_count", "1.0.0")


def frames(counter, images):
    return [counter.frame(image, camera_id=f"cam{i}", frame_id=str(i)) for i, image in enumerate(images)]


def two_people() -> np.ndarray:
    left = cv2.resize(photo("camera"), (320, 320), interpolation=cv2.INTER_AREA)
    right = cv2.resize(photo("astronaut"), (320, 320), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((480, 640, 3), np.uint8)
    canvas[80:400, :320], canvas[80:400, 320:] = left, right
    return canvas


def four_cameras() -> list[np.ndarray]:
    return [photo(PERSON_PHOTOS[0]), photo(NO_PERSON_PHOTOS[0]), two_people(), photo(PERSON_PHOTOS[1])]


#: Every batch the tests below send.
BATCHES = {
    "four cameras": four_cameras,
    "two people alone": lambda: [two_people()],
    "two people between empty rooms": lambda: [photo("coffee"), two_people(), photo("rocket")],
    **{name: lambda name=name: [photo(name)] for name in NO_PERSON_PHOTOS},
}


def test_crowd_count_counts_each_frame_and_totals_the_batch(counter):
    images = four_cameras()
    results = counter.run_batch(frames(counter, images))
    assert [r["count"] for r in results] == [1, 0, 2, 1]
    assert {r["total"] for r in results} == {4} and {r["batch_size"] for r in results} == {4}
    for image, result in zip(images, results, strict=True):
        for box in result["bounding_boxes"]:
            assert box["x"] + box["width"] <= image.shape[1] and box["y"] + box["height"] <= image.shape[0]
            assert box["confidence"] >= counter.context.config["score_threshold"]


def test_crowd_count_finds_the_same_people_alone_as_in_a_batch(counter):
    alone = counter.run_batch(frames(counter, [two_people()]))[0]
    batched = counter.run_batch(frames(counter, [photo("coffee"), two_people(), photo("rocket")]))[1]
    assert alone["count"] == batched["count"] == 2
    for a, b in zip(alone["bounding_boxes"], batched["bounding_boxes"], strict=True):
        assert abs(a["x"] - b["x"]) <= 2 and abs(a["width"] - b["width"]) <= 2


@pytest.mark.parametrize("name", NO_PERSON_PHOTOS)
def test_crowd_count_counts_nobody_when_no_photo_shows_a_person(counter, name):
    (result,) = counter.run_batch(frames(counter, [photo(name)]))
    assert (result["count"], result["total"], result["bounding_boxes"]) == (0, 0, [])


def test_crowd_count_counts_the_people_person_detection_found_in_each_frame(counter):
    batch = frames(counter, four_cameras())
    results = counter.run_batch(batch)
    for frame, result in zip(batch, results, strict=True):
        assert sides(result["bounding_boxes"]) == sides(frame.upstreams["person_detection"]["bounding_boxes"])


def test_crowd_count_counts_nobody_when_the_frames_have_no_upstream_result(counter):
    # the warmup frame: frame.upstreams is empty
    batch = [counter.frame(image, upstreams=False) for image in four_cameras()]
    results = counter.run_batch(batch)
    assert [(r["count"], r["total"], r["batch_size"]) for r in results] == [(0, 0, 4)] * 4


@pytest.mark.parametrize("name", list(BATCHES))
def test_crowd_count_answers_as_with_its_own_detector_when_given_person_detections_boxes(
    counter, island, name
):
    images = BATCHES[name]()
    shared = counter.run_batch(frames(counter, images))
    alone = island.run_batch(frames(island, images))  # benchmarks/fixtures/islands: its own detector
    for ours, theirs in zip(shared, alone, strict=True):
        keys = ("count", "total", "batch_size")
        assert {k: ours[k] for k in keys} == {k: theirs[k] for k in keys}
        assert_same_boxes(ours["bounding_boxes"], theirs["bounding_boxes"])
        for a, b in zip(ours["bounding_boxes"], theirs["bounding_boxes"], strict=True):
            assert abs(a["confidence"] - b["confidence"]) <= 0.01
