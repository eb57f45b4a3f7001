def preprocess(frame, context):
    if frame.frame_id == "fail-pre":
        raise ValueError("preprocess refused this frame")
    return frame
