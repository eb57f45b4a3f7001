"""One camera's recent masks -> persistence, flicker and growth of fire and smoke regions."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Evidence:
    persistence: float  # share of the recent frames with a region of at least the minimum area
    flicker: float  # share of the region's pixels that switched on/off 3+ times with a large brightness swing
    growth: float  # area now / area at the start of the window (1.0: unchanged)
    area_ratio: float  # region area in the last frame / frame area
    rise: float  # how far the top of the region moved up over the window, in frame heights


class MaskHistory:
    """The last ``window`` masks of one kind (fire or smoke) for one camera."""

    def __init__(self, window: int) -> None:
        self.masks: deque[np.ndarray] = deque(maxlen=window)
        self.values: deque[np.ndarray] = deque(maxlen=window)

    def push(self, mask: np.ndarray, values: np.ndarray) -> None:
        """One frame's mask and its grey levels (the brightness swing tells flicker from sensor noise)."""
        self.masks.append(mask.astype(bool))
        self.values.append(values.astype(np.float32))

    def evidence(self, min_area_ratio: float, min_swing: float) -> Evidence:
        masks = np.stack(self.masks)
        pixels = masks[0].size
        areas = masks.reshape(len(masks), -1).sum(axis=1) / pixels
        persistence = float((areas >= min_area_ratio).mean())
        flips = (masks[1:] != masks[:-1]).sum(axis=0) if len(masks) > 1 else np.zeros_like(masks[0], int)
        union = masks.any(axis=0)
        swing = np.stack(self.values).std(axis=0)
        oscillating = (flips >= 3) & (swing >= min_swing)
        flicker = float(oscillating[union].mean()) if union.any() else 0.0
        third = max(1, len(areas) // 3)
        start, end = float(np.median(areas[:third])), float(np.median(areas[-third:]))
        growth = end / start if start > 0 else (1.0 if end == 0 else 10.0)
        tops = [_top(mask) for mask in masks]
        first = [t for t in tops[:third] if t is not None]
        last = [t for t in tops[-third:] if t is not None]
        rise = float(np.median(first) - np.median(last)) if first and last else 0.0
        return Evidence(persistence, flicker, min(growth, 10.0), float(areas[-1]), rise)

    def __len__(self) -> int:
        return len(self.masks)


def _top(mask: np.ndarray) -> float | None:
    """The height (0 top .. 1 bottom) above which 5% of the region's pixels lie; None when empty."""
    rows = np.nonzero(mask.any(axis=1))[0]
    if len(rows) == 0:
        return None
    counts = mask[rows].sum(axis=1)
    index = int(np.searchsorted(np.cumsum(counts), 0.05 * counts.sum()))
    return float(rows[min(index, len(rows) - 1)]) / mask.shape[0]
