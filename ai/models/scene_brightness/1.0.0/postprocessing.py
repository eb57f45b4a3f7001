"""Brightness -> the result declared in model.yaml's output.schema."""


def postprocess(outputs, context):
    dark = float(context.config.get("dark_below", 0.25))
    bright = float(context.config.get("bright_above", 0.75))
    label = "dark" if outputs < dark else "bright" if outputs > bright else "normal"
    return {"label": label, "brightness": round(outputs, 4)}
