"""Reads its own weights (which the hostile plugin must not) and says how many bytes they hold."""


def load(context):
    return len((context.weights_dir / "secret.bin").read_bytes())


def infer(state, frame):
    return {"secret_bytes": state}
