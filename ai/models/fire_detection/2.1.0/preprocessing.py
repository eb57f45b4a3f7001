"""Frame -> the image and the camera it came from."""

from __future__ import annotations

from typing import Any


def preprocess(frame: Any, context: Any) -> dict[str, Any]:
    return {
        "image": frame.image,
        "camera_id": frame.camera_id or "",
        "sequence_start": bool(frame.sequence_start),
    }
