"""The raw ASGI front door, in front of FastAPI.

- Heartbeats take a lean path: one regex, one JSON parse, one call into the node. FastAPI's
  routing and validation would cost ~4x on this tiny request (design.md); the FastAPI route of
  the same path still exists, so OpenAPI documents it.
- Every other path is matched case-insensitively against the app's route templates, with an
  optional trailing slash, and rewritten to the canonical path: answered, never redirected
  (spec §10 items 1 and 2). Ids keep their own casing.
- Bodies larger than the limit are refused with 413 before they are read in full.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cfs_cluster.api.errors import error_response_parts
from cfs_cluster.api.models import HeartbeatBody, check_id, heartbeat_payload
from cfs_cluster.cluster.node import Node
from cfs_cluster.errors import CfsError, PayloadTooLarge
from cfs_cluster.protocol.bodies import load_json
from cfs_cluster.protocol.heartbeat import HeartbeatReport
from cfs_cluster.security.auth import refusal_headers

__all__ = ["FrontDoor"]

HEARTBEAT_PATH = re.compile(
    r"^/api/v1/clientfailover/groups/([^/]+)/clientsessions/([^/]+)/heartbeat/?$", re.IGNORECASE
)
_JSON_HEADERS = [(b"content-type", b"application/json; charset=utf-8")]


class FrontDoor:
    def __init__(self, app: ASGIApp, node: Node, routes: Callable[[], list[str]]) -> None:
        self.app = app
        self.node = node
        self._routes = routes
        self._templates: list[tuple[re.Pattern[str], list[str]]] | None = None
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
        path: str = scope["path"]
        try:  # the one place authentication and roles are enforced (auth.py)
            await self.node.auth.check(
                scope["method"], path, _header(scope, b"authorization"), _source(scope)
            )
        except CfsError as exc:
            await _send_error(send, exc, refusal_headers(exc))
            return
        if scope["method"] == "POST":
            match = HEARTBEAT_PATH.match(path)
            if match is not None:
                await self._heartbeat(match[1], match[2], receive, send)
                return
        scope = dict(scope, path=self._canonical(path))
        await self.app(scope, _limited(receive, self.max_body), send)

    # ----------------------------------------------------------------- routing

    def _canonical(self, path: str) -> str:
        if self._templates is None:
            self._templates = _compile(self._routes())
        for pattern, parts in self._templates:
            match = pattern.match(path)
            if match is not None:
                values = iter(match.groups())
                return "/".join(next(values) if p is None else p for p in parts)
        return path

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
                parsed.held_role,
                parsed.held_epoch,
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


def _compile(routes: list[str]) -> list[tuple[re.Pattern[str], list[str]]]:
    """Turn each path template '/api/v1/x/{id}/y' into a case-insensitive regex and a rebuild recipe."""
    templates = []
    for path in routes:
        parts: list[str | None] = []
        regex = []
        for segment in path.split("/"):
            if segment.startswith("{") and segment.endswith("}"):
                parts.append(None)
                regex.append("([^/]+)")
            else:
                parts.append(segment)
                regex.append(re.escape(segment))
        pattern = re.compile("^" + "/".join(regex) + "/?$", re.IGNORECASE)
        templates.append((pattern, parts))
    return templates  # type: ignore[return-value]


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
