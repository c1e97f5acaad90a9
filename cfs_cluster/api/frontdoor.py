"""The raw ASGI front door, in front of FastAPI.

- Every request's path is read once as a route of the app (api/routes.py): ASCII
  case-insensitive with an optional trailing slash, answered, never redirected (spec §10 items
  1 and 2); ids keep their own casing. A path that names no route is 404 and a route with
  another method 405, both before credentials are looked at.
- The role is decided on that route (security/roles.ROUTE_ROLES); FastAPI then gets the
  route's canonical path, so it runs the route the decision was made for.
- A route of the members' internal channel (``/_cluster/…``), or a request that says it comes
  from a member (``X-CFS-Member``), is served only if its member signature verifies
  (security/memberauth.py); a forwarded request is then authorized on the role of the caller
  the forwarding member authenticated, never on credentials of its own.
- Reads of replicated state (GET) first pass a read barrier (cluster/reads.py) unless
  ``?stale=true``; the view they may answer from travels in the request state
  (``api.requests.READ_VIEW``).
- Heartbeats take a lean path: the same route match and role check, then the heartbeat lane
  (api/fastlane.py), which the HTTP protocol also calls directly for most heartbeats, below
  ASGI. So do the batches of heartbeats followers relay (after the member signature).
  FastAPI's routing and validation would cost ~4x on this tiny request (design.md); the
  FastAPI route of the same path still exists, so OpenAPI documents it.
- Bodies larger than the limit are refused with 413 before they are read in full.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cfs_cluster.api.cluster import answer_relay
from cfs_cluster.api.errors import error_response_parts
from cfs_cluster.api.fastlane import HEARTBEAT, JSON_HEADERS, HeartbeatLane
from cfs_cluster.api.requests import CALLER, FROM_MEMBER, READ_VIEW, SENT_PATH
from cfs_cluster.api.routes import Match, RouteTable
from cfs_cluster.cluster.node import Node
from cfs_cluster.cluster.reads import ReadView, parse_stale
from cfs_cluster.engine import User
from cfs_cluster.errors import CfsError, MethodNotAllowed, NotFound, PayloadTooLarge
from cfs_cluster.protocol.heartbeat import RELAY_PATH
from cfs_cluster.security.auth import refusal_headers
from cfs_cluster.security.memberauth import MEMBER_HEADER, Caller
from cfs_cluster.security.roles import MEMBERS, required_role
from cfs_cluster.security.tokens import Principal

__all__ = ["HEARTBEAT", "FrontDoor"]

_GROUP = "/api/v1/clientfailover/groups/{group_id}"
_MEMBER_HEADER = MEMBER_HEADER.encode()
# GETs of routes under these prefixes read replicated state and are linearizable by default;
# the rest (health, readiness, metrics, cluster status, API docs, OAuth discovery) describe
# this node.
_CONSISTENT_PREFIXES = (
    "/api/v1/clientfailover",
    "/api/v1/users",
    "/api/v1/clients",
    "/api/v1/identity",
    "/api/v1/configuration",
)
# Views that show liveness, which only the deciding leader knows live: their first parameter
# is the group whose liveness the read barrier fetches.
_LIVENESS_VIEWS = frozenset(
    {
        _GROUP + "/status",
        _GROUP + "/clientsessions",
        _GROUP + "/clientsessions/{session_id}",
    }
)


class FrontDoor:
    def __init__(self, app: ASGIApp, node: Node, routes: RouteTable) -> None:
        self.app = app
        self.node = node
        self.routes = routes
        self.heartbeat_route = routes.route(HEARTBEAT)
        self._relay_route = routes.route(RELAY_PATH)
        self.max_body = node.settings.max_body_bytes
        self.lane = HeartbeatLane(node)

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
        template = match.route.template
        signature = _header(scope, _MEMBER_HEADER)
        if signature is not None or required_role(method, template) == MEMBERS:
            await self._from_member(scope, receive, send, signature, match)
            return
        try:  # the one place authentication and roles are enforced (security/auth.py)
            who = await self.node.auth.check(
                method,
                template,
                _header(scope, b"authorization"),
                self.node.auth.source_of(scope.get("client"), scope["headers"]),
            )
        except CfsError as exc:
            await _send_error(send, exc, refusal_headers(exc))
            return
        if match.route is self.heartbeat_route:
            group_id, session_id = match.params
            await self._heartbeat(group_id, session_id, receive, send)
            return
        state = {**(scope.get("state") or {}), CALLER: _caller(who), SENT_PATH: _raw_path(scope)}
        if _reads_state(method, template):
            try:
                view = await self._read_view(match, scope.get("query_string", b""))
            except CfsError as exc:
                await _send_error(send, exc)
                return
            state[READ_VIEW] = view
            send = _with_headers(send, view.headers())
        scope = dict(scope, path=match.path, raw_path=match.raw_path, state=state)
        await self.app(scope, _limited(receive, self.max_body), send)

    async def _from_member(
        self, scope: Scope, receive: Receive, send: Send, signature: bytes | None, match: Match
    ) -> None:
        """Serve a member-signed request, or refuse it (401/403) before the app sees it."""
        method: str = scope["method"]
        template = match.route.template
        try:
            body = await _read_body(receive, self.max_body)
            query = bytes(scope.get("query_string") or b"").decode("latin-1")
            target = f"{match.path}?{query}" if query else match.path
            signed = self.node.member_auth.verify(method, target, body, signature)
            if required_role(method, template) != MEMBERS:
                # A forwarded request: the role of the caller the forwarding member vouches for.
                self.node.auth.check_vouched(method, template, signed.caller)
            state: dict[str, Any] = {
                **(scope.get("state") or {}),
                FROM_MEMBER: signed,
                CALLER: signed.caller,
            }
            if _reads_state(method, template):
                state[READ_VIEW] = await self._read_view(match, scope.get("query_string", b""))
            relayed = None
            if match.route is self._relay_route and method == "POST":
                relayed = await answer_relay(self.node, body)
        except CfsError as exc:
            await _send_error(send, exc, refusal_headers(exc))
            return
        if relayed is not None:  # the lean path of relayed heartbeats: no FastAPI
            await _send_json(send, json.dumps(relayed, separators=(",", ":")).encode())
            return
        scope = dict(scope, path=match.path, raw_path=match.raw_path, state=state)
        await self.app(scope, _replayed(body, receive), send)

    # ----------------------------------------------------------------- reads

    async def _read_view(self, match: Match, query_string: bytes) -> ReadView:
        groups = [match.params[0]] if match.route.template in _LIVENESS_VIEWS else []
        if parse_stale(query_string):
            return self.node.reads.stale(groups)
        return await self.node.reads.consistent(groups)

    # ----------------------------------------------------------------- heartbeat

    async def _heartbeat(
        self, group_id: str, session_id: str, receive: Receive, send: Send
    ) -> None:
        """A heartbeat the HTTP protocol did not take to the lane itself (a chunked body, an
        in-process client): the lane's answer all the same."""
        try:
            body = await _read_body(receive, self.max_body)
        except CfsError as exc:
            await _send_error(send, exc)
            return
        status, headers, payload = await self.lane.reply_authorized(group_id, session_id, body)
        headers = [*headers, (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


async def _send_json(send: Send, payload: bytes) -> None:
    # With a content-length the server frames the answer as is, instead of chunking it.
    headers = [*JSON_HEADERS, (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _reads_state(method: str, template: str) -> bool:
    return method in ("GET", "HEAD") and template.startswith(_CONSISTENT_PREFIXES)


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


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = dict(message, headers=[*message.get("headers", []), *extra])
        await send(message)

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


async def _send_error(
    send: Send, exc: CfsError, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    status, headers, body = error_response_parts(exc)
    headers = headers + (extra or [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
