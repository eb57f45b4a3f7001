import os


def load(context):
    return None


def infer(state, frame):
    if frame.frame_id == "crash":
        os._exit(1)
    return {"alive": True}
