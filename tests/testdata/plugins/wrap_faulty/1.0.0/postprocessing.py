def postprocess(outputs, context):
    if outputs["mode"] == "postprocess":
        raise KeyError("boxes")
    if outputs["mode"] == "schema":
        return {"ok": True, "level": 3.5}
    return {"ok": True, "level": 0.5}
