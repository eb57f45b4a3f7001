def load(context):
    return None


def infer(state, frames):
    answers = []
    for frame in frames:
        upstream = frame.upstreams.get("up_counter", {})
        answers.append({"upstream_runs": upstream.get("runs", 0),
                        "upstream_frame": upstream.get("frame_id", ""), "seen": len(frames)})
    return answers
