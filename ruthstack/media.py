"""Frames in and out for ``ruthgen infer``: image files and folders, video files, annotated video.

A run's frames are :class:`SourceFrame` s in order: image files as they are (a folder gives its
JPEG and PNG files in name order), or the decoded frames of a video. Video goes through OpenCV
(``opencv-python-headless``, in the ``embedded`` extra): ``cv2.VideoCapture`` reads what its FFmpeg
reads; ``cv2.VideoWriter`` writes MPEG-4 (``mp4v``) into .mp4, .mov and .mkv files and Motion JPEG
into .avi. :class:`OrderedVideo` writes annotated frames in their order whatever order their answers
come back in.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ruthgen.errors import UsageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
VIDEO_CODECS = {".mp4": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}


@dataclass
class SourceFrame:
    """One frame to send: an image file (``path``) or a decoded video frame (``rgb``, HxWx3 uint8)."""

    index: int
    frame_id: str
    position_ms: float | None = None  # where it is in the video (or at --fps); None: unknown
    path: Path | None = None
    rgb: np.ndarray | None = None

    def image(self) -> np.ndarray:
        """The frame's RGB pixels (an image file is decoded)."""
        if self.rgb is not None:
            return self.rgb
        from PIL import Image

        assert self.path is not None
        with Image.open(self.path) as source:
            return np.asarray(source.convert("RGB"))


def image_files(paths: Iterable[Path]) -> list[Path]:
    """The files as given, each folder replaced by its JPEG and PNG files in name order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise UsageError(f"{path} holds no JPEG or PNG file")
            found.extend(images)
        else:
            found.append(path)
    return found


def image_frames(paths: list[Path], fps: float | None = None) -> Iterator[SourceFrame]:
    """One frame per image file; ``frame_id`` is the file name (numbered when two share it)."""
    seen: set[str] = set()
    for index, path in enumerate(paths):
        frame_id = path.name if path.name not in seen else f"{path.name}#{index}"
        seen.add(frame_id)
        yield SourceFrame(index, frame_id, index * 1000 / fps if fps else None, path=path)


def opencv() -> ModuleType:
    """``cv2``, or a usage error that says which install brings it."""
    try:
        import cv2
    except ImportError as exc:
        raise UsageError(
            "video needs OpenCV: pip install 'ruth-ai-runtime[embedded]' (or opencv-python-headless)"
        ) from exc
    return cv2


class VideoSource:
    """The frames of a video file, decoded in order; ``fps`` is the file's frame rate (0: unknown)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cv2 = opencv()
        self._capture = self._cv2.VideoCapture(str(path))
        if not self._capture.isOpened():
            raise UsageError(f"cannot read the video {path}")
        self.fps = float(self._capture.get(self._cv2.CAP_PROP_FPS) or 0.0)

    def frames(self) -> Iterator[SourceFrame]:
        cv2 = self._cv2
        index = 0
        try:
            while True:
                ok, bgr = self._capture.read()
                if not ok:
                    return
                position = index * 1000 / self.fps if self.fps else self._capture.get(cv2.CAP_PROP_POS_MSEC)
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                yield SourceFrame(index, f"{index:06d}", position, rgb=rgb)
                index += 1
        finally:
            self._capture.release()


def encode(rgb: np.ndarray, fmt: str) -> bytes:
    """The frame as a model takes it: ``jpeg``, ``png``, ``raw_rgb`` or ``raw_bgr`` bytes."""
    cv2 = opencv()
    if fmt == "raw_rgb":
        return np.ascontiguousarray(rgb).tobytes()
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if fmt == "raw_bgr":
        return bgr.tobytes()
    params: list[Any] = [cv2.IMWRITE_JPEG_QUALITY, 90] if fmt == "jpeg" else []
    ok, data = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", bgr, params)
    if not ok:
        raise UsageError(f"cannot encode a {rgb.shape[1]}x{rgb.shape[0]} frame as {fmt}")
    return data.tobytes()


def is_video_path(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_CODECS


class OrderedVideo:
    """A video file written frame by frame in index order: ``add(index, rgb)`` in any order; a frame
    waits until those before it have come. Every frame takes the first one's size."""

    def __init__(self, path: Path, fps: float) -> None:
        if not is_video_path(path):
            raise UsageError(f"{path}: write a video as {', '.join(VIDEO_CODECS)}")
        self.path = path
        self.fps = fps
        self.frames = 0
        self._cv2 = opencv()
        self._writer: Any = None
        self._size: tuple[int, int] | None = None
        self._waiting: dict[int, np.ndarray] = {}
        self._next = 0

    def add(self, index: int, rgb: np.ndarray) -> None:
        self._waiting[index] = rgb
        while self._next in self._waiting:
            self._write(self._waiting.pop(self._next))
            self._next += 1

    def close(self) -> int:
        """Write what is still waiting (in order, past any frame that never came); returns the count."""
        for index in sorted(self._waiting):
            self._write(self._waiting.pop(index))
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        return self.frames

    def _write(self, rgb: np.ndarray) -> None:
        cv2 = self._cv2
        if self._writer is None:
            self._size = (rgb.shape[1], rgb.shape[0])
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[self.path.suffix.lower()])
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, self._size)
            if not self._writer.isOpened():
                raise UsageError(f"cannot write the video {self.path}")
        if (rgb.shape[1], rgb.shape[0]) != self._size:
            rgb = cv2.resize(rgb, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1
