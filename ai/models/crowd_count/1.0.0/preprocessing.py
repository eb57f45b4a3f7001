"""Frame -> the people person_detection 1.0.0 found in it (``frame.upstreams``): boxes in frame
pixels, best first, those below this plugin's thresholds left out."""

from __future__ import annotations

from typing import Any

UPSTREAM = "person_detection"


def preprocess(frame: Any, context: Any) -> dict[str, Any]:
    cfg = context.config
    threshold = float(cfg.get("score_threshold", 0.5))
    min_side = int(cfg.get("min_box_side_px", 4))
    result = frame.upstreams.get(UPSTREAM) or {}  # the warmup frame has no upstream results
    boxes = [b for b in result.get("bounding_boxes", ())
             if b["confidence"] >= threshold and min(b["width"], b["height"]) >= min_side]
    boxes.sort(key=lambda b: -b["confidence"])
    return {"boxes": boxes[: int(cfg.get("max_detections", 100))]}
