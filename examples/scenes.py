"""Synthetic camera scenes for the reference plugins: a person who falls, a flame that grows.

Frames are RGB uint8 640x480 arrays with a timestamp in milliseconds. People come from the
photographs that ship with scikit-image (``skimage.data.camera`` and ``astronaut``), cropped to
the person. Those photographs show the upper body only, so a standing person stands behind a
counter that hides the legs, with the hips at about half a body height above the floor, as a
real standing person's are; "lying" is the crop rotated by 90 degrees and laid on the floor in
front of the counter. Flames are drawn
procedurally: a noisy teardrop with a white-yellow core, orange body and red rim whose tongues
change every frame. Every generator is deterministic for a given ``seed``.

As a script it writes a scene as a video clip, e.g. for ``ruthgen infer --video``:

    .venv/bin/python examples/scenes.py fall fall.mp4       # or: flame, smoke, upright
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

WIDTH, HEIGHT = 640, 480
FLOOR_Y = 460  # where things lying on the floor touch it
COUNTER_TOP = 285  # a standing person's crop ends here, behind the counter
PERSON_HEIGHT = 260
Frame = tuple[np.ndarray, int]  # (rgb, timestamp_ms)

# Where the person is in each photograph (x1, y1, x2, y2 as fractions), and which way to rotate
# the crop (np.rot90's k) so that the person lies with the hips near the floor.
PEOPLE = {
    "camera": ((0.0, 0.13, 0.59, 1.0), 3),
    "astronaut": ((0.01, 0.04, 0.71, 0.94), 1),
}


def _photo(name: str) -> np.ndarray:
    from skimage import data

    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[:, :, :3].astype(np.uint8))


def person_crop(name: str, height: int = PERSON_HEIGHT) -> np.ndarray:
    """The person of a scikit-image photograph, scaled to ``height`` pixels."""
    (x1, y1, x2, y2), _ = PEOPLE[name]
    photo = _photo(name)
    h, w = photo.shape[:2]
    crop = photo[int(y1 * h) : int(y2 * h), int(x1 * w) : int(x2 * w)]
    scale = height / crop.shape[0]
    return cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), height), interpolation=cv2.INTER_AREA)


def background(seed: int = 0) -> np.ndarray:
    """A plain room: a light wall, a darker floor below FLOOR_Y, a little sensor noise."""
    rng = np.random.default_rng(seed)
    frame = np.empty((HEIGHT, WIDTH, 3), np.float32)
    frame[:] = (170, 165, 155)
    frame[FLOOR_Y - 120 :] = (120, 110, 100)
    frame += rng.normal(0, 2.0, frame.shape)
    return np.clip(frame, 0, 255).astype(np.uint8)


def _paste(frame: np.ndarray, patch: np.ndarray, x: int, bottom: int) -> None:
    h, w = patch.shape[:2]
    top = bottom - h
    x0, y0 = max(0, x), max(0, top)
    x1, y1 = min(WIDTH, x + w), min(HEIGHT, bottom)
    frame[y0:y1, x0:x1] = patch[y0 - top : y1 - top, x0 - x : x1 - x]


def _rotated(patch: np.ndarray, degrees: float) -> np.ndarray:
    """``patch`` rotated clockwise by ``degrees`` on a canvas large enough to hold it."""
    h, w = patch.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), -degrees, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    new_w, new_h = int(h * sin + w * cos), int(h * cos + w * sin)
    matrix[0, 2] += new_w / 2 - w / 2
    matrix[1, 2] += new_h / 2 - h / 2
    return cv2.warpAffine(patch, matrix, (new_w, new_h), borderValue=(120, 110, 100))


def _counter(frame: np.ndarray) -> None:
    cv2.rectangle(frame, (60, COUNTER_TOP), (WIDTH - 60, COUNTER_TOP + 110), (95, 70, 50), -1)
    cv2.rectangle(frame, (60, COUNTER_TOP), (WIDTH - 60, COUNTER_TOP + 8), (70, 50, 35), -1)


def _standing(crop: np.ndarray, x: int, seed: int) -> np.ndarray:
    frame = background(seed)
    _paste(frame, crop, x, COUNTER_TOP)
    _counter(frame)
    return frame


def upright_sequence(
    name: str = "camera", frames: int = 20, fps: float = 10.0, seed: int = 0
) -> Iterator[Frame]:
    """A person standing and walking slowly across the room."""
    crop = person_crop(name)
    for i in range(frames):
        yield _standing(crop, 120 + 6 * i, seed + i), round(i * 1000 / fps)


def fall_sequence(
    name: str = "camera", upright: int = 8, falling: int = 2, lying: int = 8, fps: float = 10.0, seed: int = 0
) -> Iterator[Frame]:
    """Standing still, a fall that takes ``falling`` frames, then lying on the floor."""
    crop = person_crop(name)
    _, k = PEOPLE[name]
    direction = 1 if k == 3 else -1
    x = 180
    index = 0
    for _ in range(upright):
        yield _standing(crop, x, seed + index), round(index * 1000 / fps)
        index += 1
    for step in range(1, falling + 1):
        progress = step / (falling + 1)
        frame = background(seed + index)
        _counter(frame)
        bottom = round(COUNTER_TOP + (FLOOR_Y - COUNTER_TOP) * progress)
        _paste(frame, _rotated(crop, direction * 90 * progress), x, bottom)
        yield frame, round(index * 1000 / fps)
        index += 1
    lying_crop = np.ascontiguousarray(np.rot90(crop, k))
    for _ in range(lying):
        frame = background(seed + index)
        _counter(frame)
        _paste(frame, lying_crop, x - 40, FLOOR_Y)
        yield frame, round(index * 1000 / fps)
        index += 1


def lie_down_slowly_sequence(
    name: str = "camera", seconds: float = 12.0, fps: float = 2.0, seed: int = 0
) -> Iterator[Frame]:
    """The same end posture as a fall, reached over ``seconds`` (someone lying down on purpose)."""
    crop = person_crop(name)
    _, k = PEOPLE[name]
    direction = 1 if k == 3 else -1
    frames = int(seconds * fps)
    lying_crop = np.ascontiguousarray(np.rot90(crop, k))
    for i in range(frames):
        frame = background(seed + i)
        _counter(frame)
        progress = min(1.0, i / (frames * 0.75))
        if progress < 1.0:
            bottom = round(COUNTER_TOP + (FLOOR_Y - COUNTER_TOP) * progress)
            _paste(frame, _rotated(crop, direction * 90 * progress), 180, bottom)
        else:
            _paste(frame, lying_crop, 140, FLOOR_Y)
        yield frame, round(i * 1000 / fps)


def _flame_mask(rng: np.random.Generator, cx: float, base_y: float, size: float) -> np.ndarray:
    """A flame-shaped intensity map in [0, 1]: a teardrop with noisy, moving tongues."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    height = size * 2.2
    t = np.clip((base_y - yy) / max(height, 1.0), 0.0, 1.0)  # 0 at the base, 1 at the tip
    bulge = 0.6 + 0.8 * np.sin(np.pi * np.clip(t + 0.15, 0, 1))
    half_width = size * 0.55 * np.sqrt(np.clip(1.0 - t, 0, 1)) * bulge
    phases = rng.uniform(0, 2 * np.pi, 3)
    waves = zip((0.12, 0.07, 0.05), (2.0, 5.0, 9.0), phases, strict=True)
    wobble = sum(a * size * np.sin(f * t * np.pi + p) * t for a, f, p in waves)
    dist = np.abs(xx - cx - wobble) / np.maximum(half_width, 1e-3)
    inside = (yy <= base_y) & (yy >= base_y - height) & (dist < 1.0)
    value = np.where(inside, (1.0 - dist) * (1.0 - 0.5 * t), 0.0)
    tongues = rng.random((HEIGHT // 16 + 1, WIDTH // 16 + 1)).astype(np.float32)
    tongues = cv2.resize(tongues, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)[:HEIGHT, :WIDTH]
    value = value * (0.55 + 0.9 * tongues)
    return cv2.GaussianBlur(np.clip(value, 0, 1), (0, 0), 2.0)


def _fire_colours(intensity: np.ndarray) -> np.ndarray:
    """Intensity in [0, 1] -> RGB: dark red at the rim, orange in the body, white-yellow core."""
    stops = np.array([0.0, 0.25, 0.55, 0.8, 1.0])
    colours = np.array([(0, 0, 0), (180, 30, 0), (255, 120, 10), (255, 200, 60), (255, 250, 210)], np.float32)
    rgb = np.stack([np.interp(intensity, stops, colours[:, c]) for c in range(3)], axis=-1)
    return rgb


def flame_sequence(frames: int = 20, fps: float = 10.0, start_size: float = 30.0, growth: float = 1.07,
                   seed: int = 0) -> Iterator[Frame]:
    """A flame on the floor that flickers and grows by ``growth`` per frame."""
    rng = np.random.default_rng(seed)
    size = start_size
    for i in range(frames):
        frame = background(seed + i).astype(np.float32)
        intensity = _flame_mask(rng, WIDTH * 0.45, FLOOR_Y - 10, size)
        alpha = np.clip(intensity * 3.0, 0, 1)[..., None]
        frame = frame * (1 - alpha) + _fire_colours(intensity) * alpha
        yield np.clip(frame, 0, 255).astype(np.uint8), round(i * 1000 / fps)
        size *= growth


def static_orange_sequence(frames: int = 20, fps: float = 10.0, seed: int = 0) -> Iterator[Frame]:
    """An orange object (a traffic cone-like shape and an orange box) that never moves."""
    for i in range(frames):
        frame = background(seed + i)
        cone = np.array([[300, FLOOR_Y - 10], [340, FLOOR_Y - 150], [380, FLOOR_Y - 10]], np.int32)
        cv2.fillPoly(frame, [cone], (255, 120, 20))
        cv2.rectangle(frame, (420, FLOOR_Y - 90), (520, FLOOR_Y - 10), (250, 150, 30), -1)
        cv2.circle(frame, (180, 200), 40, (255, 170, 40), -1)
        yield frame, round(i * 1000 / fps)


def moving_orange_sequence(frames: int = 20, fps: float = 10.0, seed: int = 0) -> Iterator[Frame]:
    """An orange ball rolling across the floor at constant speed and size."""
    for i in range(frames):
        frame = background(seed + i)
        cv2.circle(frame, (100 + 18 * i, FLOOR_Y - 45), 40, (255, 130, 20), -1)
        yield frame, round(i * 1000 / fps)


def smoke_sequence(frames: int = 24, fps: float = 10.0, seed: int = 0) -> Iterator[Frame]:
    """A grey plume rising from the floor, spreading and thickening over time."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    for i in range(frames):
        frame = background(seed + i).astype(np.float32)
        spread = 30 + 8 * i
        top = FLOOR_Y - 40 - 12 * i
        cx = WIDTH * 0.5 + 20 * np.sin((FLOOR_Y - yy) / 60.0 + i * 0.4)
        width = spread * (0.4 + 0.6 * np.clip((FLOOR_Y - yy) / max(FLOOR_Y - top, 1), 0, 1))
        plume = np.exp(-(((xx - cx) / np.maximum(width, 1)) ** 2)) * (yy > top) * (yy < FLOOR_Y - 20)
        coarse = rng.random((HEIGHT // 24 + 1, WIDTH // 24 + 1)).astype(np.float32)
        noise = cv2.resize(coarse, (WIDTH, HEIGHT))
        density = np.clip(plume * (0.5 + 0.5 * noise) * min(1.0, 0.35 + 0.04 * i), 0, 0.85)[..., None]
        frame = frame * (1 - density) + np.array([205, 205, 205], np.float32) * density
        yield np.clip(frame, 0, 255).astype(np.uint8), round(i * 1000 / fps)


def write_video(frames: Iterable[Frame], path: str | Path, fps: float = 10.0) -> int:
    """Write the frames into a video file (MPEG-4, ``mp4v``); returns how many were written."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise OSError(f"cannot write the video {path}")
    count = 0
    for rgb, _ in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        count += 1
    writer.release()
    return count


SCENES = {
    "fall": lambda fps: fall_sequence("camera", fps=fps),
    "flame": lambda fps: flame_sequence(frames=18, fps=fps),
    "smoke": lambda fps: smoke_sequence(fps=fps),
    "upright": lambda fps: upright_sequence("camera", fps=fps),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic scene as a video clip.")
    parser.add_argument("scene", choices=sorted(SCENES))
    parser.add_argument("out", help="the video file (.mp4)")
    parser.add_argument("--fps", type=float, default=10.0)
    args = parser.parse_args(argv)
    count = write_video(SCENES[args.scene](args.fps), args.out, args.fps)
    print(f"{args.out}: {count} frames at {args.fps:g} fps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
