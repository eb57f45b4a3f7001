def load(context):
    return {}


def infer(counts, inputs):
    camera_id, start = inputs
    counts[camera_id] = 1 if start else counts.get(camera_id, 0) + 1
    return {"camera_id": camera_id, "count": counts[camera_id], "start": start}
