def preprocess(frame, context):
    return frame.frame_id or ""
