"""``create_app(settings, core)``: the FastAPI app of the sidecar's HTTP port (loopback by default).

The routes only convert; ``core`` answers (see :class:`sidecar.http.endpoints.OperationsCore`).
Access-log lines of the probe and scrape endpoints are filtered out of ``uvicorn.access``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI

from sidecar.http.endpoints import OperationsCore, build_router
from sidecar.http.status import install_error_handlers

QUIET_PATHS = ("/livez", "/readyz", "/metrics")


class HealthEndpointFilter(logging.Filter):
    """Drops uvicorn access-log records of the probe and scrape endpoints."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3:
            path = str(args[2]).split("?", 1)[0]
            return path not in QUIET_PATHS
        return True


def install_access_log_filter() -> None:
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, HealthEndpointFilter) for f in logger.filters):
        logger.addFilter(HealthEndpointFilter())


def create_app(settings: Any, core: OperationsCore) -> FastAPI:
    """The app; ``settings.admin_token`` (None: the admin call is refused) guards ``/admin``, which
    plain HTTP from a non-loopback client reaches only with ``settings.admin_allow_plaintext``."""
    app = FastAPI(title="Ruth AI Runtime sidecar", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(build_router(core, settings.admin_token, settings.admin_allow_plaintext))
    install_error_handlers(app)
    install_access_log_filter()
    return app
