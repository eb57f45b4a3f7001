"""crowd_count 1.0.0 in-process: one detector pass per batch, a count per frame, a total per batch."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from plugin_harness import NO_PERSON_PHOTOS, PERSON_PHOTOS, photo


@pytest.fixture(scope="module")
def counter(load_plugin):
    return load_plugin("crowd_count", "1.0.0")


def frames(counter, images):
    return [counter.frame(image, camera_id=f"cam{i}", frame_id=str(i)) for i, image in enumerate(images)]


def two_people() -> np.ndarray:
    left = cv2.resize(photo("camera"), (320, 320), interpolation=cv2.INTER_AREA)
    right = cv2.resize(photo("astronaut"), (320, 320), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((480, 640, 3), np.uint8)
    canvas[80:400, :320], canvas[80:400, 320:] = left, right
    return canvas


def test_crowd_count_counts_each_frame_and_totals_the_batch(counter):
    images = [photo(PERSON_PHOTOS[0]), photo(NO_PERSON_PHOTOS[0]), two_people(), photo(PERSON_PHOTOS[1])]
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
