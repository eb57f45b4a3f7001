from __future__ import annotations

import cv2
import numpy as np
import pytest
from plugin_harness import NO_PERSON_PHOTOS, PERSON_PHOTOS, photo


@pytest.fixture(scope="module")
def detector(load_plugin):
    return load_plugin("person_detection", "1.0.0")


@pytest.mark.parametrize("name", PERSON_PHOTOS)
def test_person_detection_finds_one_person_when_the_photo_shows_one(detector, name):
    image = photo(name)
    result = detector(image)
    assert result["event_type"] == "person_detected"
    assert result["count"] == 1
    box = result["bounding_boxes"][0]
    assert box["label"] == "person"
    assert box["confidence"] >= detector.context.config["score_threshold"]
    assert result["confidence"] == box["confidence"]
    # the person fills most of these photos: the box covers at least a third of the frame
    assert box["width"] * box["height"] >= image.shape[0] * image.shape[1] / 3
    assert box["x"] + box["width"] <= image.shape[1] and box["y"] + box["height"] <= image.shape[0]


@pytest.mark.parametrize("name", NO_PERSON_PHOTOS)
def test_person_detection_finds_nobody_when_the_photo_has_no_person(detector, name):
    result = detector(photo(name))
    assert result["event_type"] == "no_person"
    assert result["count"] == 0
    assert result["bounding_boxes"] == []
    assert result["confidence"] > 0.5


def test_person_detection_boxes_are_in_frame_pixels_when_the_person_is_small_in_a_640x480_frame(detector):
    canvas = np.full((480, 640, 3), 110, np.uint8)
    canvas[200:440, 300:540] = cv2.resize(photo("camera"), (240, 240), interpolation=cv2.INTER_AREA)
    result = detector(canvas)
    assert result["count"] == 1
    box = result["bounding_boxes"][0]
    center_x, center_y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    assert 300 <= center_x <= 540 and 200 <= center_y <= 440
    assert box["width"] <= 260 and box["height"] <= 260


def test_person_detection_finds_two_people_when_two_photos_stand_side_by_side(detector):
    left = cv2.resize(photo("camera"), (320, 320), interpolation=cv2.INTER_AREA)
    right = cv2.resize(photo("astronaut"), (320, 320), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((480, 640, 3), np.uint8)
    canvas[80:400, :320], canvas[80:400, 320:] = left, right
    result = detector(canvas)
    assert result["count"] == 2
    centers = sorted(b["x"] + b["width"] / 2 for b in result["bounding_boxes"])
    assert centers[0] < 320 < centers[1]


def test_person_detection_fails_clearly_when_the_text_graph_is_missing(detector, tmp_path):
    context = type(detector.context)(**{**detector.context.__dict__, "weights_dir": tmp_path})
    with pytest.raises(FileNotFoundError, match="pbtxt"):
        detector.inference.load(context)
