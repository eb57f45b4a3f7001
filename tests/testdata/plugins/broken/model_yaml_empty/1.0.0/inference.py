def load(context):
    return None


def infer(state, inputs):
    return {"label": "a", "score": 0.5}
