import time


def load(context):
    return {}


def infer(state, inputs):
    if inputs["frame_id"] == "fail-infer":
        raise RuntimeError("inference failed on purpose")
    if inputs["frame_id"] == "sleep":
        time.sleep(5)
    return inputs
