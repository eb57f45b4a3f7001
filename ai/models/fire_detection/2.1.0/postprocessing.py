"""Evidence -> decision: fire_detected / smoke_detected / no_fire, with confidence and regions."""

from __future__ import annotations

from typing import Any


def _ramp(value: float, low: float, high: float) -> float:
    return min(1.0, max(0.0, (value - low) / (high - low))) if high > low else float(value >= high)


def _fire(ev: Any, cfg: Any) -> tuple[bool, float]:
    persistence = float(cfg.get("fire_min_persistence", 0.6))
    flicker = float(cfg.get("fire_min_flicker", 0.08))
    growth_ref = float(cfg.get("fire_growth_reference", 1.5))
    is_fire = ev.persistence >= persistence and ev.flicker >= flicker
    evidence = (_ramp(ev.persistence, 0.0, 1.0) + _ramp(ev.flicker, 0.0, 3 * flicker)
                + _ramp(ev.growth, 1.0, growth_ref)) / 3
    return is_fire, evidence


def _smoke(ev: Any, cfg: Any) -> tuple[bool, float]:
    persistence = float(cfg.get("smoke_min_persistence", 0.6))
    growth = float(cfg.get("smoke_min_growth", 1.3))
    rise = float(cfg.get("smoke_min_rise", 0.03))
    is_smoke = ev.persistence >= persistence and ev.growth >= growth and ev.rise >= rise
    evidence = (_ramp(ev.persistence, 0.0, 1.0) + _ramp(ev.growth, 1.0, 2 * growth - 1)
                + _ramp(ev.rise, 0.0, 2 * rise)) / 3
    return is_smoke, evidence


def postprocess(outputs: dict[str, Any], context: Any) -> dict[str, Any]:
    cfg = context.config
    fire_ev, smoke_ev = outputs["fire"], outputs["smoke"]
    is_fire, fire_score = _fire(fire_ev, cfg)
    is_smoke, smoke_score = _smoke(smoke_ev, cfg)
    if not outputs["enough_frames"]:
        is_fire = is_smoke = False
    boxes: list[dict[str, Any]] = []
    if is_fire:
        event, confidence = "fire_detected", 0.5 + 0.5 * fire_score
    elif is_smoke:
        event, confidence = "smoke_detected", 0.5 + 0.5 * smoke_score
    else:
        event, confidence = "no_fire", 1.0 - 0.5 * max(fire_score, smoke_score)
    for label, found, score, regions in (("fire", is_fire, fire_score, outputs["fire_regions"]),
                                         ("smoke", is_smoke, smoke_score, outputs["smoke_regions"])):
        if found:
            boxes += [{"x": x, "y": y, "width": w, "height": h, "label": label,
                       "confidence": round(0.5 + 0.5 * score, 4)} for x, y, w, h in regions]
    return {
        "event_type": event,
        "confidence": round(min(max(confidence, 0.0), 1.0), 4),
        "fire_area_ratio": round(min(max(fire_ev.area_ratio, 0.0), 1.0), 5),
        "smoke_area_ratio": round(min(max(smoke_ev.area_ratio, 0.0), 1.0), 5),
        "frames_observed": int(outputs["frames_observed"]),
        "bounding_boxes": boxes,
    }
