"""Error codes and messages of the plugin runtime (see docs/internals.md, "Errors from the wrapper").

A failed request is answered with ``[RUTH:<CODE>] <phase>: <message>``; a failed load raises
:class:`LoadError`, whose message has the same shape with the code ``LOAD_FAILED`` so that the
reason Triton records in its repository index parses with the same expression.

Out-of-memory and CUDA errors raised by a plugin are recognised by :func:`resource_code`, whatever
the framework (PyTorch, ONNX Runtime, CuPy, TensorFlow, numpy), from the exception's type names and
message: a request answers ``RESOURCE_EXHAUSTED`` or ``GPU_ERROR`` instead of the phase's code, and
a failed load says ``[RUTH:LOAD_FAILED] <phase>: RESOURCE_EXHAUSTED: ...`` (:func:`load_resource_code`).
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path

INVALID_INPUT = "INVALID_INPUT"
PREPROCESS_ERROR = "PREPROCESS_ERROR"
INFERENCE_ERROR = "INFERENCE_ERROR"
POSTPROCESS_ERROR = "POSTPROCESS_ERROR"
OUTPUT_SCHEMA_VIOLATION = "OUTPUT_SCHEMA_VIOLATION"
TIMEOUT = "TIMEOUT"
RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
GPU_ERROR = "GPU_ERROR"
LOAD_FAILED = "LOAD_FAILED"

REQUEST_CODES = (
    INVALID_INPUT,
    PREPROCESS_ERROR,
    INFERENCE_ERROR,
    POSTPROCESS_ERROR,
    OUTPUT_SCHEMA_VIOLATION,
    TIMEOUT,
    RESOURCE_EXHAUSTED,
    GPU_ERROR,
)
RESOURCE_CODES = (RESOURCE_EXHAUSTED, GPU_ERROR)
MESSAGE_RE = re.compile(r"\[RUTH:([A-Z_]+)\]\s*(.*)", re.S)
_LOAD_RESOURCE_RE = re.compile(rf"\[RUTH:{LOAD_FAILED}\] [\w.]+: ({RESOURCE_EXHAUSTED}|{GPU_ERROR}): ")

# Out of memory, GPU or host: the type names (anywhere in the class hierarchy) and messages of
# torch.cuda.OutOfMemoryError, cupy.cuda.memory.OutOfMemoryError, tf.errors.ResourceExhaustedError,
# MemoryError (numpy's _ArrayMemoryError), and the texts of CUDA, cuBLAS, cuDNN and ONNX Runtime.
_OOM_TYPES = frozenset({"OutOfMemoryError", "MemoryError", "ResourceExhaustedError", "_ArrayMemoryError"})
_OOM_RE = re.compile(
    r"out of memory|CUDA_ERROR_OUT_OF_MEMORY|cudaErrorMemoryAllocation|CUBLAS_STATUS_ALLOC_FAILED"
    r"|CUDNN_STATUS_ALLOC_FAILED|Failed to allocate memory|BFCArena|\bOOM when allocating",
    re.I,
)
# Any other CUDA failure: the device or its context may be unusable until the model is reloaded.
_GPU_TYPES = frozenset({"CUDARuntimeError", "CUDADriverError", "CudaError", "AcceleratorError", "CUDNNError",
                        "CUBLASError", "NcclError"})
_GPU_RE = re.compile(
    r"CUDA error|CUDA failure|CUDA_ERROR_\w+|cudaError\w+|CUBLAS_STATUS_\w+|CUDNN_STATUS_\w+|cuDNN error"
    r"|NCCL error|device-side assert"
)


class RuthError(Exception):
    """One request (or the load) failed in ``phase`` with ``code``."""

    def __init__(self, code: str, phase: str, message: str) -> None:
        super().__init__(f"[RUTH:{code}] {phase}: {message}")
        self.code = code
        self.phase = phase
        self.message = message


class LoadError(RuthError):
    """The model cannot serve: import, ``load()`` or the warmup inference failed.

    ``resource`` (RESOURCE_EXHAUSTED, GPU_ERROR) says that it failed for lack of memory or on the GPU:
    the message then starts with that code, which :func:`load_resource_code` finds again.
    """

    def __init__(self, phase: str, message: str, resource: str | None = None) -> None:
        super().__init__(LOAD_FAILED, phase, f"{resource}: {message}" if resource else message)
        self.resource = resource


def resource_code(exc: BaseException) -> str | None:
    """RESOURCE_EXHAUSTED (out of memory) or GPU_ERROR (another CUDA error) when ``exc``, or an
    exception it was raised from, is one; None for any other failure."""
    seen: set[int] = set()
    found = None
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        names = {klass.__name__ for klass in type(current).__mro__}
        text = str(current)
        if names & _OOM_TYPES or _OOM_RE.search(text):
            return RESOURCE_EXHAUSTED
        if names & _GPU_TYPES or _GPU_RE.search(text):
            found = GPU_ERROR
        current = current.__cause__ or current.__context__
    return found


def load_resource_code(message: str) -> str | None:
    """The resource code of a failed load's reason (as Triton records it), else None."""
    match = _LOAD_RESOURCE_RE.search(message)
    return match.group(1) if match else None


def describe(exc: BaseException, plugin_dir: Path | None = None) -> str:
    """``Type: message``, plus the deepest plugin source line (``inference.py:12``) when known."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if plugin_dir is None:
        return text
    where = _plugin_location(exc, plugin_dir)
    return f"{text} ({where})" if where else text


def _plugin_location(exc: BaseException, plugin_dir: Path) -> str:
    root = str(plugin_dir)
    found = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.startswith(root):
            found = f"{Path(frame.filename).relative_to(root).as_posix()}:{frame.lineno}"
    return found


def parse_message(message: str) -> tuple[str, str] | None:
    """``(code, rest)`` of a runtime error message, or None when it is not one."""
    match = MESSAGE_RE.search(message)
    return (match.group(1), match.group(2)) if match else None
