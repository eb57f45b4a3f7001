"""Frame -> the image (the checks work on the decoded RGB frame)."""

from __future__ import annotations

from typing import Any


def preprocess(frame: Any, context: Any) -> dict[str, Any]:
    return {"image": frame.image}
