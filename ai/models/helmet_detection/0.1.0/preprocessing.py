"""Frame -> the image (the checks work on the decoded RGB frame) and person_detection's boxes."""

from __future__ import annotations

from typing import Any

from .people import person_boxes


def preprocess(frame: Any, context: Any) -> dict[str, Any]:
    people = person_boxes(frame, float(context.config.get("person_score_threshold", 0.5)))
    return {"image": frame.image, "people": people[: int(context.config.get("max_people", 20))]}
