"""The fall rule: one camera's recent observations of its main subject -> an event.

A fall is: the subject was seen upright, then lying for ``confirm_frames`` frames in a row, the
change took at most ``max_fall_duration_s``, and the hips dropped by at least ``min_hip_drop``
torso lengths at ``min_drop_speed`` torso lengths per second or faster. Lying down slowly, or
lying since the camera first saw the person, is not a fall. Pure Python: no models here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Observation:
    t: float  # seconds
    torso_angle_deg: float | None  # None when no pose was found
    aspect: float  # width / height of the person box
    hip_y: float  # pixels, downwards; the box centre when no pose was found
    scale: float  # torso length in pixels; box height / 3 when no pose was found


@dataclass(frozen=True)
class Rule:
    upright_max_deg: float = 35.0
    lying_min_deg: float = 60.0
    upright_max_aspect: float = 0.9
    lying_min_aspect: float = 1.2
    min_hip_drop: float = 0.3
    min_drop_speed: float = 0.8
    max_fall_duration_s: float = 2.0
    confirm_frames: int = 2
    min_history_frames: int = 3
    window_s: float = 10.0
    max_absent_s: float = 1.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Rule:
        names = cls.__dataclass_fields__
        return cls(**{k: type(getattr(cls, k))(v) for k, v in config.items() if k in names})

    def posture(self, obs: Observation) -> str:
        if obs.torso_angle_deg is not None:
            if obs.torso_angle_deg >= self.lying_min_deg:
                return "lying"
            return "upright" if obs.torso_angle_deg <= self.upright_max_deg else "unknown"
        if obs.aspect >= self.lying_min_aspect:
            return "lying"
        return "upright" if obs.aspect <= self.upright_max_aspect else "unknown"

    def lying_score(self, obs: Observation) -> float:
        """0 (clearly upright) .. 1 (clearly lying), from the torso angle and the box shape."""
        aspect = _ramp(obs.aspect, self.upright_max_aspect, self.lying_min_aspect)
        if obs.torso_angle_deg is None:
            return aspect
        return 0.7 * _ramp(obs.torso_angle_deg, self.upright_max_deg, self.lying_min_deg) + 0.3 * aspect


@dataclass(frozen=True)
class Decision:
    event_type: str  # fall_detected | no_fall | person_detected
    confidence: float
    posture: str  # upright | lying | unknown | absent


class CameraTrack:
    """The state of one camera: its recent observations and whether its subject is down."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.history: deque[tuple[Observation, str]] = deque()
        self.fallen_confidence: float | None = None
        self.seen_upright = False

    def update(self, obs: Observation | None, t: float) -> Decision:
        """Judge the frame taken at ``t`` seconds; ``obs`` is None when nobody was found in it."""
        rule = self.rule
        if self.history and t < self.history[-1][0].t:
            self.__init__(rule)  # the clock went back: a new stream
        if obs is None:
            return self._absent(t)
        posture = rule.posture(obs)
        self.seen_upright = self.seen_upright or posture == "upright"
        self.history.append((obs, posture))
        while self.history and obs.t - self.history[0][0].t > rule.window_s:
            self.history.popleft()

        run = self._trailing(posture)
        if posture == "upright" and run >= rule.confirm_frames:
            self.fallen_confidence = None
        if posture == "lying":
            if self.fallen_confidence is not None:
                return Decision("fall_detected", self.fallen_confidence, posture)
            if run >= rule.confirm_frames:
                return self._judge_lying(run)
        if len(self.history) < rule.min_history_frames:
            return Decision("person_detected", 1.0 - 0.5 * rule.lying_score(obs), posture)
        return Decision("no_fall", round(1.0 - rule.lying_score(obs), 4), posture)

    def _absent(self, t: float) -> Decision:
        """Nobody found. A fallen subject is often missed for a frame or two: keep the alert a while."""
        if self.fallen_confidence is not None and self.history:
            if t - self.history[-1][0].t <= self.rule.max_absent_s:
                return Decision("fall_detected", round(0.8 * self.fallen_confidence, 4), "absent")
            self.fallen_confidence = None
        return Decision("no_fall", 1.0, "absent")

    def _trailing(self, posture: str) -> int:
        count = 0
        for _, seen in reversed(self.history):
            if seen != posture:
                break
            count += 1
        return count

    def _judge_lying(self, run: int) -> Decision:
        rule = self.rule
        items = list(self.history)
        lying = [obs for obs, _ in items[-run:]]
        first = lying[0]
        upright = [obs for obs, p in items[:-run] if p == "upright"]
        if not self.seen_upright:
            return Decision("person_detected", 1.0, "lying")  # lying since first seen: cannot call it a fall
        if not upright:
            return Decision("no_fall", round(1.0 - 0.5 * rule.lying_score(lying[-1]), 4), "lying")
        before = upright[-1]
        duration = max(first.t - before.t, 1e-3)
        hip_y = sorted(o.hip_y for o in lying)[len(lying) // 2]
        drop = (hip_y - before.hip_y) / max(before.scale, 1.0)
        speed = drop / duration
        if duration > rule.max_fall_duration_s or drop < rule.min_hip_drop or speed < rule.min_drop_speed:
            return Decision("no_fall", round(1.0 - 0.5 * rule.lying_score(lying[-1]), 4), "lying")
        evidence = (rule.lying_score(lying[-1]) + _ramp(speed, 0.0, 2.0 * rule.min_drop_speed)) / 2
        self.fallen_confidence = round(0.5 + 0.5 * evidence, 4)
        return Decision("fall_detected", self.fallen_confidence, "lying")


def _ramp(value: float, low: float, high: float) -> float:
    if high <= low:
        return 1.0 if value >= high else 0.0
    return min(1.0, max(0.0, (value - low) / (high - low)))
