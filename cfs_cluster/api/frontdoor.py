"""The raw ASGI front door, in front of FastAPI.

- Heartbeats take a lean path: one regex, one JSON parse, one call into the node. FastAPI's
  routing and validation would cost ~4x on this tiny request (design.md); the FastAPI route of
  the same path still exists, so OpenAPI documents it.
- Every other path is matched case-insensitively against the app's route templates, with an
  optional trailing slash, and rewritten to the canonical path: answered, never redirected
  (spec §10 items 1 and 2). Ids keep their own casing.
- Bodies larger than the limit are refused with 413 before they are read in full.
- Reads of replicated state (GET) first pass a read barrier (reads.py) unless ``?stale=true``;
  the view they may answer from travels in the request state (``api.requests.read_view``).
- A request under ``/_cluster/`` (any spelling), or one that says it comes from a member
  (``X-CFS-Member``), is served only if its member signature verifies (memberauth.py); a
  forwarded request is then authorized on the role of the caller the forwarding member
  authenticated, never on credentials of its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cfs_cluster.api.errors import error_response_parts
from cfs_cluster.api.models import HeartbeatBody, check_id, heartbeat_payload
from cfs_cluster.api.requests import CALLER, FROM_MEMBER, READ_VIEW
from cfs_cluster.cluster.node import Node
from cfs_cluster.cluster.reads import ReadView, parse_stale
from cfs_cluster.engine import User
from cfs_cluster.errors import CfsError, PayloadTooLarge
from cfs_cluster.protocol.bodies import load_json
from cfs_cluster.protocol.heartbeat import HeartbeatReport
from cfs_cluster.security.auth import refusal_headers
from cfs_cluster.security.memberauth import MEMBER_HEADER, Caller, is_internal
from cfs_cluster.security.tokens import Principal

__all__ = ["FrontDoor"]

HEARTBEAT_PATH = re.compile(
    r"^/api/v1/clientfailover/groups/([^/]+)/clientsessions/([^/]+)/heartbeat/?$", re.IGNORECASE
)
_JSON_HEADERS = [(b"content-type", b"application/json; charset=utf-8")]
# GETs under these prefixes read replicated state and are linearizable by default; the rest
# (health, readiness, metrics, cluster status, API docs, OAuth discovery) describe this node.
_CONSISTENT_PREFIXES = (
    "/api/v1/clientfailover",
    "/api/v1/users",
    "/api/v1/clients",
    "/api/v1/identity",
    "/api/v1/configuration",
)
# Views that show liveness, which only the deciding leader knows live.
_LIVENESS_VIEW = re.compile(
    r"^/api/v1/clientfailover/groups/([^/]+)/(?:status|clientsessions(?:/[^/]+)?)/?$",
    re.IGNORECASE,
)
_MEMBER_HEADER = MEMBER_HEADER.encode()


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
        signature = _header(scope, _MEMBER_HEADER)
        if signature is not None or path.startswith("/_"):  # no case folding changes "/_"
            canonical = self._canonical(path)
            if signature is not None or is_internal(path) or is_internal(canonical):
                await self._from_member(scope, receive, send, signature, canonical)
                return
        try:  # the one place authentication and roles are enforced (auth.py)
            who = await self.node.auth.check(
                scope["method"],
                path,
                _header(scope, b"authorization"),
                self.node.auth.source_of(scope.get("client"), scope["headers"]),
            )
        except CfsError as exc:
            await _send_error(send, exc, refusal_headers(exc))
            return
        method = scope["method"]
        if method == "POST":
            match = HEARTBEAT_PATH.match(path)
            if match is not None:
                await self._heartbeat(match[1], match[2], receive, send)
                return
        elif method in ("GET", "HEAD") and path.lower().startswith(_CONSISTENT_PREFIXES):
            try:
                view = await self._read_view(path, scope.get("query_string", b""))
            except CfsError as exc:
                await _send_error(send, exc)
                return
            scope = dict(scope, state={**(scope.get("state") or {}), READ_VIEW: view})
            send = _with_headers(send, view.headers())
        state = {**(scope.get("state") or {}), CALLER: _caller(who)}
        scope = dict(scope, path=self._canonical(path), state=state)
        await self.app(scope, _limited(receive, self.max_body), send)

    async def _from_member(
        self, scope: Scope, receive: Receive, send: Send, signature: bytes | None, path: str
    ) -> None:
        """Serve a member-signed request, or refuse it (401/403) before the app sees it."""
        method: str = scope["method"]
        try:
            body = await _read_body(receive, self.max_body)
            query = bytes(scope.get("query_string") or b"").decode("latin-1")
            target = f"{path}?{query}" if query else path
            signed = self.node.member_auth.verify(method, target, body, signature)
            if not is_internal(path):  # internal routes: the signature is the authorization
                self.node.auth.check_vouched(method, path, signed.caller)
            state = {**(scope.get("state") or {}), FROM_MEMBER: signed, CALLER: signed.caller}
            if method in ("GET", "HEAD") and path.lower().startswith(_CONSISTENT_PREFIXES):
                state[READ_VIEW] = await self._read_view(path, scope.get("query_string", b""))
        except CfsError as exc:
            await _send_error(send, exc, refusal_headers(exc))
            return
        await self.app(dict(scope, path=path, state=state), _replayed(body, receive), send)

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

    # ----------------------------------------------------------------- reads

    async def _read_view(self, path: str, query_string: bytes) -> ReadView:
        match = _LIVENESS_VIEW.match(path)
        groups = [match[1]] if match is not None else []
        if parse_stale(query_string):
            return self.node.reads.stale(groups)
        return await self.node.reads.consistent(groups)

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


def _replayed(body: bytes, receive: Receive) -> Receive:
    """``receive`` for a request whose body was read already: the body, then the connection."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _caller(who: User | Principal | None) -> Caller | None:
    return None if who is None else Caller(who.name, who.role)


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


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = dict(message, headers=[*message.get("headers", []), *extra])
        await send(message)

    return wrapped


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return bytes(value)
    return None


async def _send_error(
    send: Send, exc: CfsError, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    status, headers, body = error_response_parts(exc)
    headers = headers + (extra or [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
