def load(context):
    return int(context.config.get("generation", 0))


def infer(state, frame):
    return {"generation": state, "frame_id": frame.frame_id or ""}
