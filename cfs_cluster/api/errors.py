"""One place that turns every error into the CFS ErrorResponse body (spec §2.1)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from cfs_cluster.errors import BadRequest, CfsError, MethodNotAllowed, NotFound

__all__ = ["error_response_parts", "install_error_handlers"]

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def error_response_parts(exc: CfsError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body of the ErrorResponse for ``exc``."""
    body: dict[str, Any] = {
        "OperationId": uuid.uuid4().hex,
        "Error": exc.error,
        "Reason": exc.reason,
        "Resolution": exc.resolution,
    }
    if exc.parameters:
        body["AdditionalParameters"] = exc.parameters
    headers = [(b"content-type", b"application/json; charset=utf-8")]
    if exc.retry_after is not None:
        headers.append((b"retry-after", str(max(1, round(exc.retry_after))).encode()))
    if isinstance(exc, MethodNotAllowed) and "allow" in exc.parameters:
        headers.append((b"allow", exc.parameters["allow"].encode()))
    return exc.status, headers, json.dumps(body).encode()


def render(exc: CfsError) -> Response:
    status, headers, body = error_response_parts(exc)
    response = Response(content=body, status_code=status)
    for name, value in headers:
        response.headers[name.decode()] = value.decode()
    return response


def _allowed_methods(request: Request) -> str:
    """Every method the path supports (RFC 9110 §15.5.6).

    Not Starlette's Allow header: it names only the methods of the *first* route whose path
    matched, so PUT /groups would answer "Allow: GET" although POST /groups exists too. Each
    method is tried through the public ``matches`` (included routers are nested objects).
    """
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return ", ".join(allowed)


def _from_http(request: Request, exc: StarletteHTTPException) -> CfsError:
    if exc.status_code == 404:
        return NotFound("No resource exists at this path.")
    if exc.status_code == 405:
        allow = _allowed_methods(request) or (exc.headers or {}).get("Allow", "")
        return MethodNotAllowed(
            f"The method is not allowed here; allowed: {allow or 'none'}.",
            parameters={"allow": allow},
        )
    error = CfsError(str(exc.detail))
    error.status = exc.status_code
    return error


def install_error_handlers(app: FastAPI) -> None:
    async def on_cfs_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CfsError)
        return render(exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return render(_from_http(request, exc))

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return render(BadRequest(f"{where}: {first.get('msg', 'invalid value')}"))

    app.add_exception_handler(CfsError, on_cfs_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
