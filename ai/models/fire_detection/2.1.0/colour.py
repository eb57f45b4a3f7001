"""Per-frame colour masks: flame-coloured pixels and smoke-like (grey, changed) pixels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np


def fire_mask(rgb: np.ndarray, cfg: Mapping[str, Any]) -> np.ndarray:
    """Flame colours: red high, red >= green > blue, far from grey; holes (white-hot cores) closed."""
    r, g, b = (rgb[..., c].astype(np.int16) for c in range(3))
    mask = (
        (r >= int(cfg.get("red_min", 180)))
        & (r >= g)
        & (g > b)
        & (r - b >= int(cfg.get("red_minus_blue_min", 90)))
    )
    mask = mask.astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)


def smoke_mask(
    rgb: np.ndarray, gray: np.ndarray, background: np.ndarray, cfg: Mapping[str, Any]
) -> np.ndarray:
    """Smoke-like: low saturation, mid brightness, and different from the slowly learnt background."""
    rgb16 = rgb.astype(np.int16)
    spread = rgb16.max(axis=-1) - rgb16.min(axis=-1)
    changed = np.abs(gray.astype(np.float32) - background) >= float(cfg.get("smoke_min_change", 10))
    mask = (
        changed
        & (spread <= int(cfg.get("smoke_max_spread", 30)))
        & (gray >= int(cfg.get("smoke_min_brightness", 80)))
        & (gray <= int(cfg.get("smoke_max_brightness", 235)))
    )
    return cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
