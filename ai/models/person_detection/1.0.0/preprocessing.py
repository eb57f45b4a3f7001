"""Frame -> the network's input blob (1x3xSxS float32, RGB, no scaling: the graph normalises)."""

from __future__ import annotations

from typing import Any

import cv2


def preprocess(frame: Any, context: Any) -> dict[str, Any]:
    size = int(context.config.get("input_size", 300))
    # frame.image is RGB, the order the TensorFlow graph was trained with: no channel swap.
    blob = cv2.dnn.blobFromImage(frame.image, size=(size, size), swapRB=False, crop=False)
    return {"blob": blob, "width": int(frame.width), "height": int(frame.height)}
