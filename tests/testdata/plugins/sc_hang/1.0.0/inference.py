import time


def load(context):
    return None


def infer(state, frame_id):
    if frame_id != "warmup":  # the runtime's warmup frame at load time must pass
        time.sleep(6)
    return {"done": True}
