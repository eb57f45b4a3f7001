def postprocess(outputs, context):
    if outputs["frame_id"] == "fail-post":
        raise KeyError("postprocess failed on purpose")
    if outputs["frame_id"] == "bad-schema":
        return {"label": 3}
    return {"label": "ok", **outputs}
