def load(context):
    return None


def infer(state, frame_id):
    n = int(frame_id.rsplit("-", 1)[-1])
    if n % 3 == 2:
        raise RuntimeError(f"frame {frame_id} fails on purpose")
    return {"frame_id": frame_id, "n": n}
