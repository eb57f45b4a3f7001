"""Frame -> what the fall rule needs from it: the image and where/when it was taken."""

from __future__ import annotations

from typing import Any


def preprocess(frame: Any, context: Any) -> dict[str, Any]:
    return {
        "image": frame.image,
        "camera_id": frame.camera_id or "",
        "sequence_start": bool(frame.sequence_start),
        "timestamp_ms": frame.timestamp_ms,
    }
