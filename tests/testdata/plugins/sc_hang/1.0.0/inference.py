import time


def load(context):
    return None


def infer(state, inputs):
    time.sleep(6)
    return {"done": True}
