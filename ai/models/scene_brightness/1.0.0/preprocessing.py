"""Frame -> the luma plane that `infer` averages (a subsampled float32 H x W array in [0, 1])."""

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 weights, RGB order


def preprocess(frame, context):
    step = max(1, int(context.config.get("sample_step", 4)))
    pixels = frame.image[::step, ::step, :3].astype(np.float32)
    return pixels @ LUMA / 255.0
