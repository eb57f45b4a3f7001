"""One frame's boxes (frame pixels, best first) -> the declared result, with the batch's total."""

from __future__ import annotations

from typing import Any


def postprocess(outputs: dict[str, Any], context: Any) -> dict[str, Any]:
    boxes = [
        {"x": int(x), "y": int(y), "width": int(w), "height": int(h), "label": "person",
         "confidence": round(float(score), 4)}
        for x, y, w, h, score in outputs["boxes"]
    ]
    return {"count": len(boxes), "total": int(outputs["total"]), "batch_size": int(outputs["batch_size"]),
            "bounding_boxes": boxes}
