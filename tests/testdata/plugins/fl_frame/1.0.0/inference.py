def load(context):
    return {}


def infer(state, frame):
    return {"frame_id": frame.frame_id or "", "width": frame.width}
