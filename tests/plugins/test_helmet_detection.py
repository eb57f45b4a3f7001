from __future__ import annotations

import cv2
import numpy as np
import pytest
from plugin_harness import NO_PERSON_PHOTOS, PERSON_PHOTOS, assert_same_boxes, photo, sides

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


HATS = {"yellow": (250, 210, 20), "orange": (255, 120, 0), "white": (245, 245, 245), "blue": (30, 70, 200),
        "green": (40, 160, 60)}


def yellow_patch_on_the_chest() -> np.ndarray:
    image = photo("astronaut")
    cv2.rectangle(image, (60, 300), (200, 420), HATS["yellow"], -1)
    return image


def hatted_and_bare_side_by_side() -> np.ndarray:
    hatted = with_hat(photo("astronaut"), HATS["yellow"])
    hatted = cv2.resize(hatted, (320, 320), interpolation=cv2.INTER_AREA)
    bare = cv2.resize(photo("astronaut"), (320, 320), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((480, 640, 3), np.uint8)
    canvas[100:420, :320], canvas[100:420, 320:] = hatted, bare
    return canvas


#: Every picture the tests below show the plugin.
PICTURES = {
    **{name: lambda name=name: photo(name) for name in PERSON_PHOTOS + NO_PERSON_PHOTOS},
    **{f"{name} hat": lambda rgb=rgb: with_hat(photo("astronaut"), rgb) for name, rgb in HATS.items()},
    "yellow patch": yellow_patch_on_the_chest,
    "two people": hatted_and_bare_side_by_side,
}


@pytest.fixture(scope="module")
def helmet(load_plugin):
    return load_plugin("helmet_detection", "0.1.0")


@pytest.fixture(scope="module")
def island(load_island):
    return load_island("helmet_detection", "0.1.0")


@pytest.mark.parametrize("name", PERSON_PHOTOS)
def test_helmet_detection_reports_a_missing_helmet_when_the_head_is_bare(helmet, name):
    result = helmet(photo(name))
    assert result["event_type"] == "helmet_missing"
    assert result["people"] == 1 and result["without_helmet"] == 1
    assert result["bounding_boxes"][0]["label"] == "no_helmet"
    assert result["head_regions"][0]["label"] == "none"


@pytest.mark.parametrize("colour", list(HATS.values()), ids=list(HATS))
def test_helmet_detection_finds_the_hard_hat_when_one_sits_on_the_head(helmet, colour):
    result = helmet(with_hat(photo("astronaut"), colour))
    assert result["event_type"] == "all_helmeted"
    assert result["bounding_boxes"][0]["label"] == "helmet"
    assert result["confidence"] > 0.5
    region = result["head_regions"][0]
    assert region["x"] <= HEAD_CENTRE_X <= region["x"] + region["width"]


def test_helmet_detection_ignores_hat_colours_away_from_the_head(helmet):
    assert helmet(yellow_patch_on_the_chest())["event_type"] == "helmet_missing"


def test_helmet_detection_judges_each_person_when_two_stand_side_by_side(helmet):
    result = helmet(hatted_and_bare_side_by_side())
    assert result["event_type"] == "helmet_missing"
    assert result["people"] == 2 and result["without_helmet"] == 1
    labels = {b["label"]: b["x"] for b in result["bounding_boxes"]}
    assert labels["helmet"] < 320 <= labels["no_helmet"] + 40


@pytest.mark.parametrize("name", NO_PERSON_PHOTOS)
def test_helmet_detection_reports_no_person_when_nobody_is_in_the_frame(helmet, name):
    result = helmet(photo(name))
    assert result == {"event_type": "no_person", "confidence": 1.0, "people": 0, "without_helmet": 0,
                      "bounding_boxes": [], "head_regions": []}


def test_helmet_detection_judges_the_people_person_detection_found_in_the_same_frame(helmet):
    frame = helmet.frame(hatted_and_bare_side_by_side())
    result = helmet.run(frame)
    assert sides(result["bounding_boxes"]) == sides(frame.upstreams["person_detection"]["bounding_boxes"])
    assert [r["confidence"] for r in result["head_regions"]] == [
        b["confidence"] for b in frame.upstreams["person_detection"]["bounding_boxes"]
    ]


def test_helmet_detection_reports_no_person_when_the_frame_has_no_upstream_result(helmet):
    # the warmup frame: frame.upstreams is empty
    result = helmet.run(helmet.frame(photo("astronaut"), upstreams=False))
    assert (result["event_type"], result["people"], result["bounding_boxes"]) == ("no_person", 0, [])


@pytest.mark.parametrize("name", list(PICTURES))
def test_helmet_detection_answers_as_with_its_own_detector_when_given_person_detections_boxes(
    helmet, island, name
):
    image = PICTURES[name]()
    shared, alone = helmet(image), island(image)  # alone: benchmarks/fixtures/islands, its own detector
    keys = ("event_type", "people", "without_helmet")
    assert {k: shared[k] for k in keys} == {k: alone[k] for k in keys}
    assert abs(shared["confidence"] - alone["confidence"]) <= 0.05
    assert_same_boxes(shared["bounding_boxes"], alone["bounding_boxes"])
    assert_same_boxes(shared["head_regions"], alone["head_regions"])
