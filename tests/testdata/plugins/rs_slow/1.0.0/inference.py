import time


def load(context):
    return None


def infer(state, frame):
    if frame.frame_id == "slow":
        time.sleep(1.2)
    return {"alive": True}
