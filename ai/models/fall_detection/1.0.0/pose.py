"""Body pose from MediaPipe's legacy Pose solution (the model ships in the mediapipe 0.10.21 wheel).

Only ``model_complexity=1`` is used: its ``pose_landmark_full.tflite`` is in the wheel, the other
complexities would be downloaded at first use, which this plugin never does.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LEFT_SHOULDER, RIGHT_SHOULDER, LEFT_HIP, RIGHT_HIP = 11, 12, 23, 24


@dataclass(frozen=True)
class PoseObservation:
    torso_angle_deg: float  # angle of the hip->shoulder line from straight up: 0 upright, 90 lying
    hip_x: float
    hip_y: float
    torso_length: float  # shoulder centre to hip centre, pixels
    box: tuple[int, int, int, int]  # x, y, width, height of the visible landmarks
    visibility: float  # mean visibility of shoulders and hips, 0..1


class PoseEstimator:
    def __init__(self, min_detection_confidence: float, min_visibility: float, cache_dir: Path) -> None:
        # mediapipe imports matplotlib, which creates a config folder at import: keep it inside the
        # plugin's folder (the runtime lets a plugin write only there).
        os.environ.setdefault("MPLCONFIGDIR", str(cache_dir / "matplotlib"))
        import mediapipe as mp

        self._pose = mp.solutions.pose.Pose(
            static_image_mode=True,  # frames of several cameras interleave: no tracking across calls
            model_complexity=1,
            smooth_landmarks=False,
            enable_segmentation=False,
            min_detection_confidence=min_detection_confidence,
        )
        self.min_visibility = min_visibility

    def estimate(self, rgb: np.ndarray, offset: tuple[int, int] = (0, 0)) -> PoseObservation | None:
        """Pose of the most prominent person in ``rgb``; coordinates shifted by ``offset`` (x, y)."""
        result = self._pose.process(np.ascontiguousarray(rgb))
        if result.pose_landmarks is None:
            return None
        height, width = rgb.shape[:2]
        points = np.array([(p.x * width + offset[0], p.y * height + offset[1], p.visibility)
                           for p in result.pose_landmarks.landmark], dtype=np.float64)
        torso = points[[LEFT_SHOULDER, RIGHT_SHOULDER, LEFT_HIP, RIGHT_HIP]]
        visibility = float(torso[:, 2].mean())
        shoulders = (torso[0, :2] + torso[1, :2]) / 2
        hips = (torso[2, :2] + torso[3, :2]) / 2
        dx, dy = shoulders - hips
        length = float(math.hypot(dx, dy))
        if length < 1.0:
            return None
        angle = math.degrees(math.atan2(abs(dx), -dy))
        seen = points[points[:, 2] >= self.min_visibility][:, :2]
        if len(seen) < 4:
            seen = points[:, :2]
        x1, y1 = np.floor(seen.min(axis=0))
        x2, y2 = np.ceil(seen.max(axis=0))
        box = (int(x1), int(y1), int(max(x2 - x1, 1)), int(max(y2 - y1, 1)))
        return PoseObservation(angle, float(hips[0]), float(hips[1]), length, box, visibility)

    def close(self) -> None:
        self._pose.close()
