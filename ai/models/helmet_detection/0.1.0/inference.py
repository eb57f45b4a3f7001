"""Hard-hat check (experimental heuristic): the head region of each person.

Person boxes come from the upstream person_detection 1.0.0 (``frame.upstreams``, read in
preprocessing.py); the head and hard-hat rules are in head.py. No learnt hard-hat model is involved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2

from .head import HeadCheck, HeadFinder, check_band, clip_region
from .people import Box


@dataclass
class HelmetState:
    heads: HeadFinder
    config: Any


def load(context: Any) -> HelmetState:
    return HelmetState(HeadFinder(), context.config)


def infer(state: HelmetState, inputs: dict[str, Any]) -> list[tuple[Box, HeadCheck]]:
    image, people = inputs["image"], inputs["people"]
    if not people:
        return []
    height, width = image.shape[:2]
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    checks = []
    for person in people:
        band, face = state.heads.head_band(gray, (person.x, person.y, person.width, person.height))
        checks.append((person, check_band(image, clip_region(band, width, height), face, state.config)))
    return checks
