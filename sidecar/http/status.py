"""The one mapping of sidecar errors to HTTP answers (``{"error": {"code", "message"}}``)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from sidecar.errors import ErrorCode, SidecarError

LOGGER = logging.getLogger(__name__)

HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.MODEL_NOT_FOUND: 404,
    ErrorCode.VERSION_REQUIRED: 400,
    ErrorCode.MODEL_NOT_READY: 503,
    ErrorCode.INVALID_INPUT: 400,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.PREPROCESS_ERROR: 422,
    ErrorCode.INFERENCE_ERROR: 422,
    ErrorCode.POSTPROCESS_ERROR: 422,
    ErrorCode.OUTPUT_SCHEMA_VIOLATION: 422,
    ErrorCode.OVERLOADED: 429,
    ErrorCode.INTERNAL: 500,
    ErrorCode.RESOURCE_EXHAUSTED: 503,
    ErrorCode.GPU_ERROR: 500,
    ErrorCode.UPSTREAM_ERROR: 424,
}


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


async def _sidecar_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SidecarError)
    return JSONResponse(error_body(exc.code.value, exc.message), status_code=HTTP_STATUS.get(exc.code, 500))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    LOGGER.exception("unexpected error answering %s %s", request.method, request.url.path)
    return JSONResponse(error_body(ErrorCode.INTERNAL.value, "internal error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(SidecarError, _sidecar_error)
    app.add_exception_handler(Exception, _unexpected)
