"""One frame's boxes (frame pixels, best first) -> the declared result, with the batch's total."""

from __future__ import annotations

from typing import Any


def postprocess(outputs: dict[str, Any], context: Any) -> dict[str, Any]:
    boxes = [
        {"x": int(b["x"]), "y": int(b["y"]), "width": int(b["width"]), "height": int(b["height"]),
         "label": "person", "confidence": round(float(b["confidence"]), 4)}
        for b in outputs["boxes"]
    ]
    return {"count": len(boxes), "total": int(outputs["total"]), "batch_size": int(outputs["batch_size"]),
            "bounding_boxes": boxes}
