"""Hard-hat check (experimental heuristic): person boxes, then the head region of each person.

Person boxes come from SSDLite-MobileNetV2 (this plugin's copy of the detector, person_boxes.py);
the head and hard-hat rules are in head.py. No learnt hard-hat model is involved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2

from .head import HeadCheck, HeadFinder, check_band, clip_region
from .person_boxes import Box, PersonDetector


@dataclass
class HelmetState:
    detector: PersonDetector
    heads: HeadFinder
    config: Any


def load(context: Any) -> HelmetState:
    cfg = context.config
    detector = PersonDetector(context.weights_dir, float(cfg.get("person_score_threshold", 0.5)))
    return HelmetState(detector, HeadFinder(), cfg)


def infer(state: HelmetState, inputs: dict[str, Any]) -> list[tuple[Box, HeadCheck]]:
    image = inputs["image"]
    height, width = image.shape[:2]
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    people = state.detector.detect(image)[: int(state.config.get("max_people", 20))]
    checks = []
    for person in people:
        band, face = state.heads.head_band(gray, (person.x, person.y, person.width, person.height))
        checks.append((person, check_band(image, clip_region(band, width, height), face, state.config)))
    return checks
