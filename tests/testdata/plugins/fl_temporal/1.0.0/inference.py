def load(context):
    return {}


def infer(counts, frame):
    camera = frame.camera_id or ""
    counts[camera] = 1 if frame.sequence_start else counts.get(camera, 0) + 1
    return {"camera_id": camera, "frame_id": frame.frame_id or "", "count": counts[camera],
            "start": bool(frame.sequence_start)}
