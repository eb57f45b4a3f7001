"""The sidecar's errors: one root, one subclass per kind, each carrying a transport-neutral code.

:class:`ErrorCode` mirrors ``ruth.airuntime.v1.ErrorCode`` by name. The mapping of codes to gRPC
status codes lives only in :mod:`sidecar.grpc.status`; :data:`ERROR_CODE_KEY` is the trailing
metadata key that carries the code of a failed unary call (the server sets it, the client reads it);
:data:`ERROR_DOMAIN` is the ``domain`` of the standard ``google.rpc.ErrorInfo`` that carries it too;
:data:`REGION_KEY` is the call metadata that registers a shared-memory region (frames by reference;
both sides use it).
"""

from __future__ import annotations

import enum

ERROR_CODE_KEY = "ruth-error-code"
ERROR_DOMAIN = "ruth.airuntime.v1"  # the API's protobuf package
REGION_KEY = "ruth-frame-region"


class ErrorCode(str, enum.Enum):
    MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
    VERSION_REQUIRED = "VERSION_REQUIRED"
    MODEL_NOT_READY = "MODEL_NOT_READY"
    INVALID_INPUT = "INVALID_INPUT"
    TIMEOUT = "TIMEOUT"
    PREPROCESS_ERROR = "PREPROCESS_ERROR"
    INFERENCE_ERROR = "INFERENCE_ERROR"
    POSTPROCESS_ERROR = "POSTPROCESS_ERROR"
    OUTPUT_SCHEMA_VIOLATION = "OUTPUT_SCHEMA_VIOLATION"
    OVERLOADED = "OVERLOADED"
    INTERNAL = "INTERNAL"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    GPU_ERROR = "GPU_ERROR"
    UPSTREAM_ERROR = "UPSTREAM_ERROR"


#: A model's own failures that say its instance needs a reload: out of memory, or a CUDA error.
RESOURCE_FAILURES = frozenset({ErrorCode.RESOURCE_EXHAUSTED, ErrorCode.GPU_ERROR})


class SidecarError(Exception):
    """Root of every error the sidecar raises or answers with.

    ``phase`` says where a request failed: the wrapper's phase (``decode``, ``preprocess``,
    ``infer``, ``postprocess``, ``validate``), ``deadline`` (the sidecar's timeout), ``process`` (the
    model's process died), or None when it is not known.
    """

    code: ErrorCode = ErrorCode.INTERNAL
    phase: str | None = None

    def __init__(self, message: str, code: ErrorCode | None = None, phase: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if phase is not None:
            self.phase = phase

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.value}: {self.message!r})"


class ModelNotFound(SidecarError):
    code = ErrorCode.MODEL_NOT_FOUND


class VersionRequired(SidecarError):
    code = ErrorCode.VERSION_REQUIRED


class ModelNotReady(SidecarError):
    code = ErrorCode.MODEL_NOT_READY


class InvalidInput(SidecarError):
    code = ErrorCode.INVALID_INPUT


class RequestTimeout(SidecarError):
    code = ErrorCode.TIMEOUT
    phase = "deadline"


class Overloaded(SidecarError):
    code = ErrorCode.OVERLOADED


class UpstreamFailed(SidecarError):
    """An upstream the model needs failed on the frame: the message names it and its own code."""

    code = ErrorCode.UPSTREAM_ERROR


class PluginError(SidecarError):
    """The plugin's own failure, reported by the wrapper as ``[RUTH:<CODE>] <phase>: <message>``."""


class InternalError(SidecarError):
    code = ErrorCode.INTERNAL


class InferenceServerUnavailable(SidecarError):
    """Triton cannot be reached (not a per-request answer: health and startup use it)."""

    code = ErrorCode.INTERNAL


class ManifestError(SidecarError):
    """The repository's manifest is missing or unreadable."""

    code = ErrorCode.INTERNAL


class ModelProcessDied(InternalError):
    """The model's process died under a request: the model must be reloaded before it answers again."""

    phase = "process"


class ModelNotLoaded(ModelNotReady):
    """The inference server does not have the model loaded (it restarted, or the model was unloaded)."""


class SharedMemoryLost(ModelNotReady):
    """The inference server no longer holds the frame pool's region (it restarted): registered again
    before the next frame by reference."""


class SequenceNotStarted(SidecarError):
    """The inference server refused a sequence request without START (the sequence was released)."""

    code = ErrorCode.INTERNAL


class Draining(SidecarError):
    """The runtime is shutting down: it takes no new call or stream (send it to another runtime)."""

    code = ErrorCode.MODEL_NOT_READY

    def __init__(self, message: str = "the runtime is shutting down (draining): send to another runtime",
                 **kwargs) -> None:
        super().__init__(message, **kwargs)


class ModelLoadError(SidecarError):
    """The inference server could not load a model; ``message`` is its reason."""

    code = ErrorCode.MODEL_NOT_READY
