"""ruthstack.annotate: boxes found by shape alone, drawn where the answer says."""

import numpy as np
from PIL import Image

from ruthstack.annotate import Box, annotate, annotate_frame, find_boxes, output_paths, summary

RESULT = {
    "event_type": "person_detected",
    "confidence": 0.91,
    "count": 2,
    "bounding_boxes": [
        {"x": 10, "y": 20, "width": 30, "height": 40, "label": "person", "confidence": 0.9},
        {"x": 50.5, "y": 5, "width": 10, "height": 10},
    ],
    "nested": {"regions": [{"x": 1, "y": 1, "width": 2, "height": 2, "label": "smoke"}]},
}


def test_find_boxes_returns_every_box_shaped_object_when_nested_anywhere():
    assert find_boxes(RESULT) == [
        Box(10, 20, 30, 40, "person 0.90"),
        Box(50.5, 5, 10, 10, ""),
        Box(1, 1, 2, 2, "smoke"),
    ]


def test_find_boxes_ignores_objects_when_a_coordinate_is_missing_or_not_a_number():
    partial = {"x": 1, "y": 2, "width": 3}
    boolean = {"x": 1, "y": 2, "width": True, "height": 4}
    assert find_boxes({"a": partial, "b": boolean}) == []


def test_summary_lists_top_level_scalars_only():
    assert summary(RESULT) == "event_type=person_detected  confidence=0.91  count=2"


def test_annotate_draws_box_outlines_where_the_result_puts_them(tmp_path):
    source = tmp_path / "grey.png"
    Image.fromarray(np.full((100, 120, 3), 128, np.uint8)).save(source)
    out = tmp_path / "out" / "annotated.png"
    assert annotate(source, {"boxes": [{"x": 60, "y": 50, "width": 40, "height": 30}]}, out) == 1
    drawn = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert drawn.shape == (100, 120, 3)
    assert (drawn[65, 60] != 128).any()  # left edge of the box
    assert (drawn[65, 80] == 128).all()  # inside the box: untouched
    assert (drawn[95, 10] == 128).all()  # far from it: untouched


def test_output_paths_keeps_the_path_for_one_image_and_names_one_per_image_for_several(tmp_path):
    out = tmp_path / "ann.png"
    assert output_paths(out, [tmp_path / "a.jpg"]) == [out]
    assert output_paths(out, [tmp_path / "a.jpg", tmp_path / "b.jpg"]) == [
        tmp_path / "ann-a.png", tmp_path / "ann-b.png",
    ]


def test_annotate_frame_draws_the_boxes_of_a_result_on_a_copy():
    grey = np.full((100, 120, 3), 128, np.uint8)
    box = {"x": 60, "y": 50, "width": 40, "height": 30}
    drawn, boxes = annotate_frame(grey, {"result": {"boxes": [box]}})
    assert boxes == 1 and drawn.shape == grey.shape
    assert (drawn[65, 60] != 128).any() and (drawn[65, 80] == 128).all()
    assert (grey == 128).all()  # the frame itself is left as it was


def test_annotate_frame_writes_an_errors_code_where_the_summary_goes():
    grey = np.full((100, 120, 3), 128, np.uint8)
    drawn, boxes = annotate_frame(grey, {"error": {"code": "TIMEOUT", "message": "no answer"}})
    assert boxes == 0
    assert (drawn[85:, :60] != 128).any()  # bottom left: the caption
    assert (drawn[:50] == 128).all()
