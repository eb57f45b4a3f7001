def load(context):
    return {}


def infer(cameras, frame):
    if frame.sequence_start or frame.camera_id not in cameras:
        cameras[frame.camera_id] = []
    cameras[frame.camera_id].append(int(frame.image[0, 0, 0]))
    return {"camera_id": frame.camera_id, "seen": list(cameras[frame.camera_id])}
