import time


def load(context):
    return {
        "frames": context.metrics.counter("frames", "frames seen per camera", labels=("camera",)),
        "seconds": context.metrics.histogram("infer_seconds", "time in infer", buckets=(0.001, 0.01, 0.1)),
        "count": 0,
    }


def infer(state, frame):
    started = time.monotonic()
    if frame.frame_id == "bad":
        raise ValueError("the frame is not one this model can read")
    state["count"] += 1
    state["frames"].inc(camera=frame.camera_id or "none")
    state["seconds"].observe(time.monotonic() - started)
    return {"frames": state["count"]}
