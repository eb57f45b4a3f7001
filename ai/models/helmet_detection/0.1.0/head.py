"""Where a person's head is, and whether something hard-hat-like sits on it (a heuristic).

Head: OpenCV's frontal-face Haar cascade (shipped inside opencv-python-headless) in the upper half
of the person box; without a face, the top of the person box. Hard hat: in the band from above
the head down to the forehead, the largest blob of one hard-hat colour (saturated yellow, orange,
red, green or blue, or bright white) must cover enough of the band, span most of the head's width
and be a smooth convex shape (a dome), not hair, skin or background texture.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

# OpenCV hue is 0..179. Each colour: (hue ranges, minimum saturation, minimum value).
HAT_COLOURS = {
    "yellow": (((20, 35),), 150, 120),
    "orange": (((8, 20),), 170, 120),
    "red": (((0, 8), (170, 180)), 150, 90),
    "green": (((40, 85),), 120, 70),
    "blue": (((95, 130),), 120, 70),
}


@dataclass(frozen=True)
class HeadCheck:
    region: tuple[int, int, int, int]  # x, y, width, height of the band that was checked
    helmet: bool
    score: float  # confidence in ``helmet`` (True or False), 0.5..1
    colour: str | None
    face_found: bool


class HeadFinder:
    def __init__(self) -> None:
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self.faces = cv2.CascadeClassifier(path)
        if self.faces.empty():
            raise FileNotFoundError(f"{path} is missing from the installed opencv-python-headless")

    def head_band(
        self, gray: np.ndarray, box: tuple[int, int, int, int]
    ) -> tuple[tuple[int, int, int, int], bool]:
        """The band where a hard hat would be, in frame pixels, and whether a face placed it."""
        x, y, w, h = box
        upper = gray[y : y + max(1, h // 2), x : x + w]
        min_side = max(16, int(min(w, h) * 0.12))
        faces = self.faces.detectMultiScale(upper, 1.1, 5, minSize=(min_side, min_side)) if upper.size else ()
        if len(faces):
            fx, fy, fw, fh = max(faces, key=lambda f: f[2] * f[3])
            return (x + fx - fw // 4, y + fy - int(0.75 * fh), fw + fw // 2, int(0.95 * fh)), True
        head = int(min(w, h) * 0.35)
        return (x + (w - head) // 2, y - head // 5, head, int(head * 0.8)), False


def clip_region(region: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    x, y, w, h = region
    x1, y1 = max(0, x), max(0, y)
    x2, y2 = min(width, x + w), min(height, y + h)
    return x1, y1, max(0, x2 - x1), max(0, y2 - y1)


def hat_masks(hsv: np.ndarray, cfg: Mapping[str, Any]) -> dict[str, np.ndarray]:
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    masks = {}
    for name, (ranges, min_s, min_v) in HAT_COLOURS.items():
        in_hue = np.zeros(hue.shape, bool)
        for low, high in ranges:
            in_hue |= (hue >= low) & (hue < high)
        masks[name] = in_hue & (sat >= min_s) & (val >= min_v)
    white_s, white_v = int(cfg.get("white_max_saturation", 30)), int(cfg.get("white_min_value", 215))
    masks["white"] = (sat <= white_s) & (val >= white_v)
    return masks


def check_band(rgb: np.ndarray, region: tuple[int, int, int, int], face_found: bool,
               cfg: Mapping[str, Any]) -> HeadCheck:
    x, y, w, h = region
    if w < 8 or h < 6:
        return HeadCheck(region, False, 0.0, None, face_found)
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb[y : y + h, x : x + w]), cv2.COLOR_RGB2HSV)
    min_fill = float(cfg.get("min_fill", 0.3))
    min_span = float(cfg.get("min_span", 0.55))
    min_solidity = float(cfg.get("min_solidity", 0.8))
    found: tuple[float, str] | None = None  # (evidence, colour) of the best hard-hat-like blob
    partial = 0.0  # how close the best other blob came, 0..1
    for name, mask in hat_masks(hsv, cfg).items():
        mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if count <= 1:
            continue
        index = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        area = float(stats[index, cv2.CC_STAT_AREA])
        fill, span = area / (w * h), stats[index, cv2.CC_STAT_WIDTH] / w
        contours, _ = cv2.findContours((labels == index).astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        hull = cv2.contourArea(cv2.convexHull(max(contours, key=cv2.contourArea)))
        solidity = area / hull if hull > 0 else 0.0
        ratios = (fill / min_fill, span / min_span, solidity / min_solidity)
        if min(ratios) >= 1.0:
            evidence = min(1.0, (fill + span + solidity) / 3)
            if found is None or evidence > found[0]:
                found = (evidence, name)
        else:
            partial = max(partial, sum(min(r, 1.0) for r in ratios) / 3)
    if found is not None:
        return HeadCheck(region, True, round(0.5 + 0.5 * found[0], 4), found[1], face_found)
    return HeadCheck(region, False, round(1.0 - 0.5 * partial, 4), None, face_found)
