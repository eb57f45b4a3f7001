"""People per frame of a batch and their total over the batch.

The boxes are the upstream person_detection 1.0.0's answer for each frame (``frame.upstreams``,
read in preprocessing.py); ``infer`` gets the whole batch as one list and adds the frames up.
"""

from __future__ import annotations

from typing import Any


def load(context: Any) -> None:
    return None


def infer(state: None, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    total = sum(len(item["boxes"]) for item in batch)
    return [{"boxes": item["boxes"], "total": total, "batch_size": len(batch)} for item in batch]
