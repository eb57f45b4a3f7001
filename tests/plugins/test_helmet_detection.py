from __future__ import annotations

import cv2
import numpy as np
import pytest
from plugin_harness import NO_PERSON_PHOTOS, PERSON_PHOTOS, photo

# the astronaut's head in skimage.data.astronaut() (512x512): centre x 224, hair top near y 20
HEAD_CENTRE_X, HAT_TOP = 224, 18


def with_hat(image: np.ndarray, colour: tuple[int, int, int], centre_x: int = HEAD_CENTRE_X,
             top: int = HAT_TOP, half_width: int = 62, height: int = 52) -> np.ndarray:
    """A hard hat drawn on the head: a half-ellipse dome and a brim."""
    image = image.copy()
    cv2.ellipse(image, (centre_x, top + height), (half_width, height), 0, 180, 360, colour, -1)
    brim = (centre_x - half_width - 12, top + height - 6), (centre_x + half_width + 12, top + height + 6)
    cv2.rectangle(image, *brim, colour, -1)
    return image


@pytest.fixture(scope="module")
def helmet(load_plugin):
    return load_plugin("helmet_detection", "0.1.0")


@pytest.mark.parametrize("name", PERSON_PHOTOS)
def test_helmet_detection_reports_a_missing_helmet_when_the_head_is_bare(helmet, name):
    result = helmet(photo(name))
    assert result["event_type"] == "helmet_missing"
    assert result["people"] == 1 and result["without_helmet"] == 1
    assert result["bounding_boxes"][0]["label"] == "no_helmet"
    assert result["head_regions"][0]["label"] == "none"


@pytest.mark.parametrize(
    "colour", [(250, 210, 20), (255, 120, 0), (245, 245, 245), (30, 70, 200), (40, 160, 60)],
    ids=["yellow", "orange", "white", "blue", "green"],
)
def test_helmet_detection_finds_the_hard_hat_when_one_sits_on_the_head(helmet, colour):
    result = helmet(with_hat(photo("astronaut"), colour))
    assert result["event_type"] == "all_helmeted"
    assert result["bounding_boxes"][0]["label"] == "helmet"
    assert result["confidence"] > 0.5
    region = result["head_regions"][0]
    assert region["x"] <= HEAD_CENTRE_X <= region["x"] + region["width"]


def test_helmet_detection_ignores_hat_colours_away_from_the_head(helmet):
    image = photo("astronaut")
    cv2.rectangle(image, (60, 300), (200, 420), (250, 210, 20), -1)  # a yellow patch on the chest
    assert helmet(image)["event_type"] == "helmet_missing"


def test_helmet_detection_judges_each_person_when_two_stand_side_by_side(helmet):
    hatted = with_hat(photo("astronaut"), (250, 210, 20))
    hatted = cv2.resize(hatted, (320, 320), interpolation=cv2.INTER_AREA)
    bare = cv2.resize(photo("astronaut"), (320, 320), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((480, 640, 3), np.uint8)
    canvas[100:420, :320], canvas[100:420, 320:] = hatted, bare
    result = helmet(canvas)
    assert result["event_type"] == "helmet_missing"
    assert result["people"] == 2 and result["without_helmet"] == 1
    labels = {b["label"]: b["x"] for b in result["bounding_boxes"]}
    assert labels["helmet"] < 320 <= labels["no_helmet"] + 40


@pytest.mark.parametrize("name", NO_PERSON_PHOTOS)
def test_helmet_detection_reports_no_person_when_nobody_is_in_the_frame(helmet, name):
    result = helmet(photo(name))
    assert result == {"event_type": "no_person", "confidence": 1.0, "people": 0, "without_helmet": 0,
                      "bounding_boxes": [], "head_regions": []}
