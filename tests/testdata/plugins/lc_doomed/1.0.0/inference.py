import os


def load(context):
    return None


def infer(state, frame):
    if frame.frame_id != "warmup":
        os._exit(3)
    return {"alive": True}
