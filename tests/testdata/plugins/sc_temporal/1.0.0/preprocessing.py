def preprocess(frame, context):
    return (frame.camera_id or "", bool(frame.sequence_start))
