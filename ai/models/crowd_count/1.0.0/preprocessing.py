"""Frame -> the network's input image (RGB, SxS, no crop) and the frame's size."""

from __future__ import annotations

from typing import Any

import cv2


def preprocess(frame: Any, context: Any) -> dict[str, Any]:
    side = int(context.config.get("input_size", 300))
    image = cv2.resize(frame.image, (side, side), interpolation=cv2.INTER_LINEAR)
    return {"image": image, "width": int(frame.width), "height": int(frame.height)}
