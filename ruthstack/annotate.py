"""Draw a model's answer on its image, for people to look at (``ruthgen infer --annotate``).

Model-agnostic: any object in the result that has numeric ``x``, ``y``, ``width`` and ``height``
(pixels, top-left origin) is drawn as a box, captioned with its ``label`` and ``confidence`` when
present; the result's top-level scalar fields (an event type, a count, ...) are written in the
bottom-left corner, and an error answer's code and message in their place. Nothing here knows what
a model detects. :func:`annotate` writes an image file; :func:`annotate_frame` draws on a video frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

BOX_KEYS = ("x", "y", "width", "height")
Colour = tuple[int, int, int]
PALETTE: tuple[Colour, ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
)


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    width: float
    height: float
    caption: str = ""


def find_boxes(result: Any) -> list[Box]:
    """Every box-shaped object anywhere in ``result``, in document order."""
    return list(_walk(result))


def _walk(node: Any) -> Iterator[Box]:
    if isinstance(node, dict):
        if all(_is_number(node.get(k)) for k in BOX_KEYS):
            yield Box(*(float(node[k]) for k in BOX_KEYS), caption=_caption(node))
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _caption(node: dict[str, Any]) -> str:
    label = node.get("label")
    confidence = node.get("confidence")
    parts = [str(label)] if isinstance(label, str) else []
    if _is_number(confidence):
        parts.append(f"{confidence:.2f}")
    return " ".join(parts)


def summary(result: Any) -> str:
    """The result's top-level scalar fields, ``key=value`` joined."""
    if not isinstance(result, dict):
        return ""
    scalars = {k: v for k, v in result.items() if isinstance(v, str | int | float | bool)}
    return "  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in scalars.items())


def annotate(image_path: Path, result: Any, out_path: Path) -> int:
    """Write ``image_path`` with the boxes and summary of ``result`` drawn on it; returns the box count."""
    with Image.open(image_path) as source:
        image = source.convert("RGB")
    count = draw(image, result)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    image.save(out_path)
    return count


def annotate_frame(rgb: np.ndarray, answer: dict[str, Any]) -> tuple[np.ndarray, int]:
    """A copy of the HxWx3 RGB frame with ``answer`` drawn: its result's boxes and summary, or its
    error's code and message; returns it and the box count."""
    image = Image.fromarray(rgb)
    if "result" in answer:
        count = draw(image, answer["result"])
    else:
        error = answer.get("error") or {}
        _caption_bottom_left(image, f"{error.get('code', 'ERROR')}: {error.get('message', '')}", (200, 0, 0))
        count = 0
    return np.asarray(image), count


def draw(image: Image.Image, result: Any) -> int:
    """Draw the boxes and the summary of ``result`` on ``image`` (RGB, in place); returns the box count."""
    boxes = find_boxes(result)
    pen = ImageDraw.Draw(image)
    line = max(2, round(min(image.size) / 200))
    for index, box in enumerate(boxes):
        colour = PALETTE[index % len(PALETTE)]
        corners = (box.x, box.y, box.x + max(box.width, 1), box.y + max(box.height, 1))
        pen.rectangle(corners, outline=colour, width=line)
        if box.caption:
            _label(pen, (box.x, max(0.0, box.y - 14)), box.caption, colour)
    text = summary(result)
    if text:  # bottom left, where it hides no box label
        _caption_bottom_left(image, text, (0, 0, 0))
    return len(boxes)


def _caption_bottom_left(image: Image.Image, text: str, colour: Colour) -> None:
    pen = ImageDraw.Draw(image)
    _label(pen, (4, image.height - 4 - _text_height(pen, text)), text, colour)


def _label(draw: ImageDraw.ImageDraw, origin: tuple[float, float], text: str, colour: Colour) -> None:
    left, top, right, bottom = draw.textbbox(origin, text)
    draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=colour)
    draw.text(origin, text, fill=(255, 255, 255))


def _text_height(draw: ImageDraw.ImageDraw, text: str) -> int:
    _, top, _, bottom = draw.textbbox((0, 0), text)
    return bottom - top


def output_paths(out: Path, images: list[Path]) -> list[Path]:
    """One output per image: ``out`` itself for one image, ``<out stem>-<image stem><suffix>`` for several."""
    if len(images) == 1:
        return [out]
    suffix = out.suffix or ".png"
    return [out.with_name(f"{out.stem}-{image.stem}{suffix}") for image in images]
