"""The one mapping from sidecar error codes to gRPC status codes, and how errors leave a call.

A unary call that fails ends with the mapped status, the error's message as details, and the
error code twice in the trailing metadata: as the standard rich error model (``grpc-status-details-bin``:
a ``google.rpc.Status`` holding one ``google.rpc.ErrorInfo`` whose ``reason`` is the code and whose
``domain`` is ``ruth.airuntime.v1``), which gRPC clients in every language decode, and under the key
``ruth-error-code`` (``sidecar.client`` turns it back into an ``InferenceResponse.error``). On
InferStream errors travel inside each response instead.
Anything else a handler raises becomes INTERNAL with a generic message (and is logged).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from sidecar.errors import ERROR_CODE_KEY, ERROR_DOMAIN, ErrorCode, InternalError, SidecarError

LOGGER = logging.getLogger("sidecar.grpc")

GRPC_STATUS: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.MODEL_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.VERSION_REQUIRED: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.MODEL_NOT_READY: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.INVALID_INPUT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorCode.PREPROCESS_ERROR: grpc.StatusCode.INTERNAL,
    ErrorCode.INFERENCE_ERROR: grpc.StatusCode.INTERNAL,
    ErrorCode.POSTPROCESS_ERROR: grpc.StatusCode.INTERNAL,
    ErrorCode.OUTPUT_SCHEMA_VIOLATION: grpc.StatusCode.INTERNAL,
    ErrorCode.OVERLOADED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
    ErrorCode.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.GPU_ERROR: grpc.StatusCode.INTERNAL,
    ErrorCode.UPSTREAM_ERROR: grpc.StatusCode.FAILED_PRECONDITION,
}


async def abort(context: grpc.aio.ServicerContext, error: SidecarError) -> None:
    """End the call with the status of ``error`` (raises, as ``context.abort`` does)."""
    await _abort(context, GRPC_STATUS[error.code], error.message, error.code)


def error_metadata(status: grpc.StatusCode, message: str, code: ErrorCode) -> tuple[tuple[str, Any], ...]:
    """The trailing metadata of a failed call: the rich error model, then ``ruth-error-code``."""
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=code.value, domain=ERROR_DOMAIN))
    rich = rpc_status.to_status(status_pb2.Status(code=status.value[0], message=message, details=[info]))
    return (*rich.trailing_metadata, (ERROR_CODE_KEY, code.value))


async def _abort(
    context: grpc.aio.ServicerContext, status: grpc.StatusCode, message: str, code: ErrorCode
) -> None:
    await context.abort(status, message, trailing_metadata=error_metadata(status, message, code))


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def unexpected(where: str) -> SidecarError:
    """The error a caller gets for a handler's own bug (logged here with its traceback; the details
    never leave the sidecar)."""
    LOGGER.exception("%s failed", where)
    return InternalError("internal error")


def handle_errors(method: F) -> F:
    """Decorator of unary handlers: SidecarError -> its status; anything else -> INTERNAL."""

    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except SidecarError as e:
            await abort(context, e)
        except Exception:  # the handler's bug must not leak details to the caller
            await abort(context, unexpected(method.__name__))

    return wrapper  # type: ignore[return-value]
