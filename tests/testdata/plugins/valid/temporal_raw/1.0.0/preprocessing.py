def preprocess(frame, context):
    return frame.image
