"""Per-person checks -> the result: one box per person labelled helmet / no_helmet, and an event."""

from __future__ import annotations

from typing import Any


def postprocess(outputs: list[Any], context: Any) -> dict[str, Any]:
    boxes, heads = [], []
    for person, check in outputs:
        label = "helmet" if check.helmet else "no_helmet"
        boxes.append({"x": int(person.x), "y": int(person.y), "width": int(person.width),
                      "height": int(person.height),
                      "label": label, "confidence": round(min(max(check.score, 0.0), 1.0), 4)})
        x, y, w, h = (int(v) for v in check.region)
        heads.append({"x": x, "y": y, "width": max(w, 1), "height": max(h, 1),
                      "label": check.colour or "none",
                      "confidence": round(min(max(person.confidence, 0.0), 1.0), 4)})
    missing = [b for b in boxes if b["label"] == "no_helmet"]
    if not boxes:
        event, confidence = "no_person", 1.0
    elif missing:
        event, confidence = "helmet_missing", max(b["confidence"] for b in missing)
    else:
        event, confidence = "all_helmeted", min(b["confidence"] for b in boxes)
    return {"event_type": event, "confidence": round(confidence, 4), "people": len(boxes),
            "without_helmet": len(missing), "bounding_boxes": boxes, "head_regions": heads}
