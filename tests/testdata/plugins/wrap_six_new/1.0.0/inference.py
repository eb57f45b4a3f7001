import sys

import numpy
import six


def load(context):
    return None


def infer(state, frame):
    return {"six": six.__version__, "numpy": numpy.__version__, "prefix": sys.prefix}
