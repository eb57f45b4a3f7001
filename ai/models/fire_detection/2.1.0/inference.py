"""Fire and smoke by a classical method: colour masks per frame, flicker and growth over frames.

No learnt model. Per camera (``frame.camera_id``, reset on ``sequence_start``) the plugin keeps
the last ``window_frames`` fire and smoke masks (at ``work_width`` pixels wide) and a slowly
learnt background; a region is fire when flame-coloured pixels persist and oscillate on and off
(flames flicker at several hertz, lamps, clothing and painted objects do not), smoke when grey
changed pixels persist and their area grows.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from .colour import fire_mask, smoke_mask
from .temporal import Evidence, MaskHistory


@dataclass
class Camera:
    fire: MaskHistory
    smoke: MaskHistory
    background: np.ndarray | None = None


@dataclass
class FireState:
    config: Any
    cameras: OrderedDict[str, Camera] = field(default_factory=OrderedDict)

    def camera(self, camera_id: str, restart: bool) -> Camera:
        camera = self.cameras.pop(camera_id, None)
        if camera is None or restart:
            window = int(self.config.get("window_frames", 10))
            camera = Camera(MaskHistory(window), MaskHistory(window))
        self.cameras[camera_id] = camera
        while len(self.cameras) > int(self.config.get("max_cameras", 256)):
            self.cameras.popitem(last=False)
        return camera


def load(context: Any) -> FireState:
    return FireState(context.config)


def infer(state: FireState, inputs: dict[str, Any]) -> dict[str, Any]:
    cfg = state.config
    image = inputs["image"]
    height, width = image.shape[:2]
    work_width = min(int(cfg.get("work_width", 320)), width)
    scale = work_width / width
    small = cv2.resize(image, (work_width, max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)

    camera = state.camera(inputs["camera_id"], inputs["sequence_start"])
    if camera.background is None:
        camera.background = gray.astype(np.float32)
    fire = fire_mask(small, cfg)
    grown_fire = cv2.dilate(fire, np.ones((9, 9), np.uint8))
    smoke = smoke_mask(small, gray, camera.background, cfg) & (1 - grown_fire)
    rate = float(cfg.get("background_rate", 0.05))
    cv2.accumulateWeighted(gray.astype(np.float32), camera.background, rate)
    camera.fire.push(fire, gray)
    camera.smoke.push(smoke, gray)

    min_frames = int(cfg.get("min_frames", 5))
    enough = len(camera.fire) >= min_frames
    swing = float(cfg.get("flicker_min_swing", 12.0))
    fire_ev = camera.fire.evidence(float(cfg.get("fire_min_area_ratio", 0.0005)), swing)
    smoke_ev = camera.smoke.evidence(float(cfg.get("smoke_min_area_ratio", 0.005)), swing)
    return {
        "enough_frames": enough,
        "frames_observed": len(camera.fire),
        "fire": fire_ev,
        "smoke": smoke_ev,
        "fire_regions": _regions(camera.fire, scale, cfg),
        "smoke_regions": _regions(camera.smoke, scale, cfg),
    }


def _regions(history: MaskHistory, scale: float, cfg: Any) -> list[tuple[int, int, int, int]]:
    """Boxes (frame pixels) of the regions in the last few masks, largest first."""
    recent = np.stack(list(history.masks)[-3:]).any(axis=0).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(recent, connectivity=8)
    min_pixels = int(cfg.get("min_region_pixels", 12))
    boxes = []
    for x, y, w, h, area in stats[1:count]:
        if area >= min_pixels:
            boxes.append((int(x / scale), int(y / scale), max(1, int(w / scale)), max(1, int(h / scale))))
    boxes.sort(key=lambda b: -b[2] * b[3])
    return boxes[: int(cfg.get("max_regions", 10))]


__all__ = ["Evidence", "FireState", "infer", "load"]
