"""Rule decision and boxes -> the result of the output schema."""

from __future__ import annotations

from typing import Any


def postprocess(outputs: dict[str, Any], context: Any) -> dict[str, Any]:
    decision = outputs["decision"]
    subject = outputs["subject"]
    boxes = []
    for box in outputs["boxes"]:
        fallen = decision.event_type == "fall_detected" and box == subject
        boxes.append({
            "x": int(box.x), "y": int(box.y), "width": int(box.width), "height": int(box.height),
            "label": "fallen_person" if fallen else "person",
            "confidence": round(min(max(float(box.confidence), 0.0), 1.0), 4),
        })
    angle = outputs["torso_angle_deg"]
    return {
        "event_type": decision.event_type,
        "confidence": round(min(max(float(decision.confidence), 0.0), 1.0), 4),
        "posture": decision.posture,
        "torso_angle_deg": None if angle is None else round(float(angle), 1),
        "frames_observed": int(outputs["frames_observed"]),
        "bounding_boxes": boxes,
    }
