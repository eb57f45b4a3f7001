"""The model: the mean of the luma plane. A real plugin loads its weights in `load`."""

import numpy as np


def load(context):
    context.logger.info("loaded %s %s", context.model_id, context.version)
    return {"device": context.device}


def infer(state, inputs):
    # input.type batch: `inputs` is a list and a list of the same length comes back.
    if isinstance(inputs, list):
        return [_mean(luma) for luma in inputs]
    return _mean(inputs)


def _mean(luma):
    return float(np.clip(luma.mean(), 0.0, 1.0)) if luma.size else 0.0
