"""Fall detection: person boxes + body pose per frame, a posture rule over each camera's frames.

Per frame: the person boxes of the upstream person_detection 1.0.0 (``frame.upstreams``, read in
preprocessing.py); MediaPipe pose on the largest person (on the whole frame when no box is found:
the detector often misses people lying down); an observation of torso angle, box shape and hip
height. Per camera (``frame.camera_id``, reset on ``sequence_start``): the rule in posture.py turns
the recent observations into fall_detected / no_fall / person_detected.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .people import Box
from .pose import PoseEstimator, PoseObservation
from .posture import CameraTrack, Decision, Observation, Rule


@dataclass
class CameraClock:
    """Seconds for frames without timestamps: counted at the configured frame rate."""

    last_t: float | None = None

    def tick(self, timestamp_ms: Any, fps: float) -> float:
        if timestamp_ms is not None and str(timestamp_ms).strip() != "":
            self.last_t = float(timestamp_ms) / 1000.0
        else:
            self.last_t = 0.0 if self.last_t is None else self.last_t + 1.0 / fps
        return self.last_t


@dataclass
class Camera:
    track: CameraTrack
    clock: CameraClock = field(default_factory=CameraClock)


@dataclass
class FallState:
    pose: PoseEstimator
    rule: Rule
    config: Any
    cameras: OrderedDict[str, Camera] = field(default_factory=OrderedDict)

    def camera(self, camera_id: str, restart: bool) -> Camera:
        camera = self.cameras.pop(camera_id, None)
        if camera is None or restart:
            camera = Camera(CameraTrack(self.rule))
        self.cameras[camera_id] = camera  # most recently used last
        while len(self.cameras) > int(self.config.get("max_cameras", 256)):
            self.cameras.popitem(last=False)
        return camera


def load(context: Any) -> FallState:
    cfg = context.config
    pose = PoseEstimator(float(cfg.get("pose_min_detection_confidence", 0.5)),
                         float(cfg.get("pose_min_visibility", 0.5)), Path(context.model_dir) / ".cache")
    return FallState(pose, Rule.from_config(cfg.get("rule", {})), cfg)


def _subject_pose(state: FallState, image: Any, box: Box | None) -> PoseObservation | None:
    if box is not None:
        margin = float(state.config.get("pose_crop_margin", 0.2))
        height, width = image.shape[:2]
        x1 = max(0, int(box.x - margin * box.width))
        y1 = max(0, int(box.y - margin * box.height))
        x2 = min(width, int(box.x + box.width * (1 + margin)))
        y2 = min(height, int(box.y + box.height * (1 + margin)))
        found = state.pose.estimate(image[y1:y2, x1:x2], offset=(x1, y1))
        if found is not None:
            return found
    return state.pose.estimate(image)


def infer(state: FallState, inputs: dict[str, Any]) -> dict[str, Any]:
    image = inputs["image"]
    camera = state.camera(inputs["camera_id"], inputs["sequence_start"])
    t = camera.clock.tick(inputs["timestamp_ms"], float(state.config.get("assumed_fps", 10.0)))

    boxes = list(inputs["boxes"])
    subject = max(boxes, key=lambda b: b.area) if boxes else None
    pose = _subject_pose(state, image, subject)
    if subject is None and pose is not None:
        x, y, w, h = pose.box
        subject = Box(x, y, w, h, round(pose.visibility, 4))
        boxes = [subject]

    observation = None
    if subject is not None:
        aspect = subject.width / max(subject.height, 1)
        if pose is not None:
            observation = Observation(t, pose.torso_angle_deg, aspect, pose.hip_y, pose.torso_length)
        else:
            observation = Observation(t, None, aspect, subject.y + subject.height / 2, subject.height / 3)
    decision: Decision = camera.track.update(observation, t)
    return {
        "decision": decision,
        "boxes": boxes,
        "subject": subject,
        "torso_angle_deg": None if pose is None else pose.torso_angle_deg,
        "frames_observed": len(camera.track.history),
    }
