"""The HTTP routes: each converts the request, asks the core, and converts the answer.

* ``GET /livez``: 200 while the process serves (Triton's state does not matter: restarting the
  sidecar would not fix it); ``GET /readyz``: 200 when ready, else 503, with the reasons;
* ``GET /capabilities``: the capability declaration (the JSON sent to the backend);
* ``GET /models[?model_id=&version=]``: state, reason, history, health, performance per version;
* ``GET /metrics``: Prometheus text;
* ``GET /``: the status page (``static/``: HTML, CSS and a script, no external assets), which reads
  ``GET /status.json`` (the runtime's health, Triton's readiness, the hardware, and ``/models``)
  every two seconds; read-only, like everything here but the admin call;
* ``POST /admin/rescan[?model_id=]``: needs ``Authorization: Bearer <admin token>``; refused
  (403) when no token is configured, and over plain HTTP from a client that is not on loopback
  (the token would cross the network in clear) unless ``admin_allow_plaintext``. This port is not
  the backend-facing gRPC one.
"""

from __future__ import annotations

import hmac
import ipaddress
from importlib import resources
from typing import Any, Protocol

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from sidecar.http.status import error_body


class OperationsCore(Protocol):
    def live(self) -> bool: ...
    def readiness_report(self) -> tuple[bool, dict[str, Any]]: ...
    def capabilities(self) -> dict[str, Any]: ...
    def models(self, model_id: str | None = None, version: str | None = None) -> list[dict[str, Any]]: ...
    async def rescan(self, model_id: str | None = None) -> list[dict[str, Any]]: ...
    def metrics_text(self) -> tuple[bytes, str]: ...
    def status(self) -> dict[str, Any]: ...


#: The status page's files: name -> (media type, bytes), read once.
_STATIC = {
    name: (f"{media}; charset=utf-8", resources.files("sidecar.http").joinpath("static", name).read_bytes())
    for name, media in (("status.html", "text/html"), ("status.css", "text/css"),
                        ("status.js", "text/javascript"))
}
#: The page loads only its own files and reads only this port.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def build_router(core: OperationsCore, admin_token: str | None, allow_plaintext: bool = False) -> APIRouter:
    router = APIRouter()

    @router.get("/livez")
    async def livez() -> JSONResponse:
        live = core.live()
        return JSONResponse({"live": live}, status_code=200 if live else 503)

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        ready, body = core.readiness_report()
        return JSONResponse(body, status_code=200 if ready else 503)

    @router.get("/capabilities")
    async def capabilities() -> dict[str, Any]:
        return core.capabilities()

    @router.get("/models")
    async def models(model_id: str | None = None, version: str | None = None) -> dict[str, Any]:
        return {"models": core.models(model_id, version)}

    @router.get("/metrics")
    async def metrics() -> Response:
        body, content_type = core.metrics_text()
        return Response(body, media_type=content_type)

    @router.get("/", include_in_schema=False)
    async def page() -> Response:
        return _static("status.html")

    @router.get("/status.css", include_in_schema=False)
    async def page_css() -> Response:
        return _static("status.css")

    @router.get("/status.js", include_in_schema=False)
    async def page_js() -> Response:
        return _static("status.js")

    @router.get("/status.json")
    async def status() -> dict[str, Any]:
        return core.status()

    @router.post("/admin/rescan")
    async def rescan(
        request: Request,
        model_id: str | None = Query(None, description="only this model's versions"),
        authorization: str | None = Header(None),
    ) -> JSONResponse:
        refusal = _check_admin(admin_token, authorization, allow_plaintext or _private(request))
        if refusal is not None:
            return refusal
        return JSONResponse({"models": await core.rescan(model_id or None)})

    return router


def _static(name: str) -> Response:
    media, body = _STATIC[name]
    return Response(body, media_type=media, headers=_PAGE_HEADERS)


def _private(request: Request) -> bool:
    """The request came over TLS, or from loopback: its token did not cross a network in clear."""
    if request.url.scheme == "https":
        return True
    host = request.client.host if request.client is not None else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _check_admin(token: str | None, authorization: str | None, private: bool) -> JSONResponse | None:
    if not token:
        return JSONResponse(
            error_body("FORBIDDEN", "the admin API is disabled: set RUTH_ADMIN_TOKEN to enable it"),
            status_code=403,
        )
    if not private:
        return JSONResponse(
            error_body(
                "FORBIDDEN",
                "the admin call over plain HTTP is accepted from loopback only (the token would cross the "
                "network in clear): serve the HTTP port over TLS (RUTH_HTTP_TLS with RUTH_TLS_CERT_FILE and "
                "RUTH_TLS_KEY_FILE), call it from inside the pod, or set RUTH_ADMIN_ALLOW_PLAINTEXT=true",
            ),
            status_code=403,
        )
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return JSONResponse(
            error_body("UNAUTHENTICATED", "a valid 'Authorization: Bearer <admin token>' header is required"),
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    return None
