"""The people person_detection 1.0.0 found in this frame: its boxes, read from ``frame.upstreams``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

UPSTREAM = "person_detection"


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    width: int
    height: int
    confidence: float

    @property
    def area(self) -> int:
        return self.width * self.height


def person_boxes(frame: Any, min_score: float = 0.0) -> list[Box]:
    """Person boxes in frame pixels, best first; none when the frame has no upstream result (warmup)."""
    result = frame.upstreams.get(UPSTREAM) or {}
    boxes = [Box(int(b["x"]), int(b["y"]), int(b["width"]), int(b["height"]), float(b["confidence"]))
             for b in result.get("bounding_boxes", ())]
    return sorted((b for b in boxes if b.confidence >= min_score), key=lambda b: -b.confidence)
