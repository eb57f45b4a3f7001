def load(context):
    return None


def infer(state, frame):
    return {"ok": True}
