def load(context):
    return None


def infer(state, frame):
    upstream = frame.upstreams.get("up_counter", {})
    return {"upstream_runs": upstream.get("runs", 0), "upstream_frame": upstream.get("frame_id", ""),
            "seen": 1}
