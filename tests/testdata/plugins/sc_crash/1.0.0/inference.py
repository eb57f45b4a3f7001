import os


def load(context):
    return None


def infer(state, frame_id):
    if frame_id == "crash":
        os._exit(1)
    return {"alive": True}
