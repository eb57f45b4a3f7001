"""Frame -> what the fall rule needs: the image, person_detection's boxes, where and when it was taken."""

from __future__ import annotations

from typing import Any

from .people import person_boxes


def preprocess(frame: Any, context: Any) -> dict[str, Any]:
    return {
        "image": frame.image,
        "boxes": person_boxes(frame),
        "camera_id": frame.camera_id or "",
        "sequence_start": bool(frame.sequence_start),
        "timestamp_ms": frame.timestamp_ms,
    }
