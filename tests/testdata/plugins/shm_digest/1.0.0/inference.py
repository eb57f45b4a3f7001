import hashlib


def load(context):
    return {}


def infer(state, frame):
    digest = hashlib.sha256(frame.image.tobytes()).hexdigest()
    camera_id = frame.camera_id or ""
    return {"width": frame.width, "height": frame.height, "sha256": digest, "camera_id": camera_id}
