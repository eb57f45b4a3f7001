def load(context):
    raise RuntimeError("weights file is corrupt")


def infer(state, inputs):
    return {"x": 1}
