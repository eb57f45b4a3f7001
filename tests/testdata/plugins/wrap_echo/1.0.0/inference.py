"""Reports the frame as the plugin sees it; writes a file in its scratch folder at load and per frame."""

import numpy as np


def load(context):
    scratch = context.scratch_dir / "scratch.txt"
    scratch.write_text("written during load")
    context.logger.info("loaded with threshold %s", context.config["threshold"])
    return {"version": context.version, "threshold": float(context.config["threshold"]), "scratch": scratch}


def infer(state, frame):
    state["scratch"].write_text(str(frame.frame_id))
    return {
        "version": state["version"],
        "width": frame.width,
        "height": frame.height,
        "mean_rgb": [float(v) for v in np.asarray(frame.image, dtype=np.float64).mean(axis=(0, 1))],
        "camera_id": frame.camera_id,
        "frame_id": frame.frame_id,
        "timestamp_ms": frame.timestamp_ms,
        "writes_scratch": state["scratch"].read_text() == str(frame.frame_id),
        "threshold": state["threshold"],
    }
