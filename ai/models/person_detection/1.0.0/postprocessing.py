"""Network rows -> the result: person boxes in frame pixels, their count and an event."""

from __future__ import annotations

from typing import Any

import numpy as np

PERSON_CLASS_ID = 1


def postprocess(outputs: dict[str, Any], context: Any) -> dict[str, Any]:
    cfg = context.config
    threshold = float(cfg.get("score_threshold", 0.5))
    max_boxes = int(cfg.get("max_detections", 50))
    min_side = int(cfg.get("min_box_side_px", 4))
    width, height = int(outputs["width"]), int(outputs["height"])
    rows = np.asarray(outputs["detections"], dtype=np.float32).reshape(-1, 7)
    rows = rows[rows[:, 1] == PERSON_CLASS_ID]
    best_candidate = float(rows[:, 2].max()) if len(rows) else 0.0
    rows = rows[np.argsort(-rows[:, 2], kind="stable")]

    boxes: list[dict[str, Any]] = []
    for row in rows:
        score = float(row[2])
        if score < threshold or len(boxes) >= max_boxes:
            break
        x1 = round(float(np.clip(row[3], 0.0, 1.0) * width))
        y1 = round(float(np.clip(row[4], 0.0, 1.0) * height))
        x2 = round(float(np.clip(row[5], 0.0, 1.0) * width))
        y2 = round(float(np.clip(row[6], 0.0, 1.0) * height))
        if x2 - x1 < min_side or y2 - y1 < min_side:
            continue
        boxes.append(
            {"x": x1, "y": y1, "width": x2 - x1, "height": y2 - y1, "label": "person",
             "confidence": round(min(max(score, 0.0), 1.0), 4)}
        )

    if boxes:
        event, confidence = "person_detected", boxes[0]["confidence"]
    else:
        event, confidence = "no_person", round(1.0 - min(max(best_candidate, 0.0), 1.0), 4)
    return {"event_type": event, "confidence": confidence, "count": len(boxes), "bounding_boxes": boxes}
