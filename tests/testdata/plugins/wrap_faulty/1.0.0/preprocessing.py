MODES = {0: "ok", 10: "preprocess", 20: "infer", 30: "postprocess", 40: "schema", 50: "hang",
         60: "write_outside", 70: "connect"}


def preprocess(frame, context):
    mode = MODES.get(int(frame.image[0, 0, 0]), "ok")
    if mode == "preprocess":
        raise ValueError("cannot prepare this frame")
    return {"mode": mode, "outside": context.model_dir.parent.parent / "escaped.txt"}
