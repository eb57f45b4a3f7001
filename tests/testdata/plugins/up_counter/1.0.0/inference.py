import time


def load(context):
    return {"runs": 0}


def infer(state, frame):
    if frame.frame_id == "boom":
        raise RuntimeError("the detector failed")
    if frame.frame_id == "slow":
        time.sleep(2.0)
    state["runs"] += 1
    return {"runs": state["runs"], "frame_id": frame.frame_id or ""}
