def load(context):
    raise MemoryError(
        "Unable to allocate 64.0 GiB for an array with shape (8589934592,) and data type float64"
    )


def infer(state, frame):
    return {"alive": True}
