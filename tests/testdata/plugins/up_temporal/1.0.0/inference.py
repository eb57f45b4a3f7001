def load(context):
    return {}


def infer(seen, frame):
    camera = frame.camera_id or ""
    seen[camera] = 1 if frame.sequence_start else seen.get(camera, 0) + 1
    upstream = frame.upstreams.get("up_counter", {})
    return {"upstream_runs": upstream.get("runs", 0), "upstream_frame": upstream.get("frame_id", ""),
            "seen": seen[camera]}
