class OutOfMemoryError(RuntimeError):
    """Named and placed as torch.cuda.OutOfMemoryError (PyTorch is not installed here)."""


OutOfMemoryError.__module__ = "torch.cuda"


def load(context):
    return None


def infer(state, frame):
    if frame.frame_id == "oom":
        raise OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 15.74 GiB total capacity; "
            "14.20 GiB already allocated; 1.12 GiB free; 14.30 GiB reserved in total by PyTorch)"
        )
    return {"alive": True}
