def load(context):
    return {}


def infer(state, batch):
    ids = [frame.frame_id or "" for frame in batch]
    if "fail-infer" in ids:
        raise RuntimeError("inference failed on purpose")
    return [
        {"frame_id": frame.frame_id or "", "camera_id": frame.camera_id or "", "width": frame.width,
         "batch_size": len(batch), "batch_frames": ids}
        for frame in batch
    ]
