def load(context):
    return None


def infer(state, inputs):
    return {"x": 1}
