def load(context):
    return None


def infer(state, frame_id):
    tail = frame_id.rsplit("-", 1)[-1]
    n = int(tail) if tail.isdigit() else 0
    if n % 3 == 2:
        raise RuntimeError(f"frame {frame_id} fails on purpose")
    return {"frame_id": frame_id, "n": n}
