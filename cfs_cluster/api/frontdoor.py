"""The raw ASGI front door, in front of FastAPI.

- Every request's path is read once as a route of the app (api/routes.py): ASCII
  case-insensitive with an optional trailing slash, answered, never redirected (spec §10 items
  1 and 2); ids keep their own casing. A path that names no route is 404 and a route with
  another method 405, both before credentials are looked at.
- The role is decided on that route (auth.ROUTE_ROLES); FastAPI then gets the route's
  canonical path, so it runs the route the decision was made for.
- Heartbeats take a lean path: the same route match and role check, one JSON parse, one call
  into the node. FastAPI's routing and validation would cost ~4x on this tiny request
  (design.md); the FastAPI route of the same path still exists, so OpenAPI documents it.
- Bodies larger than the limit are refused with 413 before they are read in full.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..auth import refusal_headers
from ..errors import CfsError, MethodNotAllowed, NotFound, PayloadTooLarge
from ..liveness import HeartbeatReport
from ..models import HeartbeatBody, check_id, heartbeat_payload, load_json
from ..node import Node
from .errors import error_response_parts
from .routes import RouteTable

__all__ = ["HEARTBEAT", "FrontDoor"]

HEARTBEAT = "/api/v1/clientfailover/groups/{group_id}/clientsessions/{session_id}/heartbeat"
_JSON_HEADERS = [(b"content-type", b"application/json; charset=utf-8")]


class FrontDoor:
    def __init__(self, app: ASGIApp, node: Node, routes: RouteTable) -> None:
        self.app = app
        self.node = node
        self.routes = routes
        self._heartbeat_route = routes.route(HEARTBEAT)
        self.max_body = node.settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_body:
            await _send_error(
                send, PayloadTooLarge(f"The body has {length} bytes; the limit is {self.max_body}.")
            )
            return
        match = self.routes.match(_raw_path(scope))
        method: str = scope["method"]
        if match is None:
            await _send_error(send, NotFound("No resource exists at this path."))
            return
        if method not in match.route.methods:
            allow = ", ".join(sorted(match.route.methods))
            refusal = f"The method is not allowed here; allowed: {allow}."
            await _send_error(send, MethodNotAllowed(refusal, parameters={"allow": allow}))
            return
        try:  # the one place authentication and roles are enforced (auth.py)
            await self.node.auth.check(
                method, match.route.template, _header(scope, b"authorization"), _source(scope)
            )
        except CfsError as exc:
            await _send_error(send, exc, refusal_headers(exc))
            return
        if match.route is self._heartbeat_route:
            group_id, session_id = match.params
            await self._heartbeat(group_id, session_id, receive, send)
            return
        scope = dict(scope, path=match.path, raw_path=match.raw_path)
        await self.app(scope, _limited(receive, self.max_body), send)

    # ----------------------------------------------------------------- heartbeat

    async def _heartbeat(
        self, group_id: str, session_id: str, receive: Receive, send: Send
    ) -> None:
        try:
            body = await _read_body(receive, self.max_body)
            parsed = HeartbeatBody.parse(load_json(body))
            report = HeartbeatReport(
                check_id(group_id, "groupId"),
                check_id(session_id, "sessionId"),
                parsed.score,
                parsed.last_data_processed,
                parsed.heartbeat_time,
            )
            answer = await self.node.heartbeat(report)
        except CfsError as exc:
            await _send_error(send, exc)
            return
        payload = heartbeat_payload(answer)
        # With a content-length the server frames the answer as is, instead of chunking it.
        headers = [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body is larger than {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _limited(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise PayloadTooLarge(f"The body is larger than {limit} bytes.")
        return message

    return wrapped


def _raw_path(scope: Scope) -> bytes:
    """The path as sent; a server may leave out ``raw_path`` (ASGI), then it is re-encoded."""
    raw: bytes | None = scope.get("raw_path")
    return raw if raw is not None else quote(scope["path"]).encode("ascii")


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return bytes(value)
    return None


def _source(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def _send_error(
    send: Send, exc: CfsError, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    status, headers, body = error_response_parts(exc)
    headers = headers + (extra or [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


SendCallable = Callable[[Message], Awaitable[None]]
