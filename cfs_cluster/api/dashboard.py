"""The web dashboard's API (docs/dashboard.md): the routes it needs beyond the public API. Its
static files are served by ``cfs_cluster.api.dashboard_files``.

- ``GET /api/v1/dashboard/groups`` is one page of group summaries, filtered and sorted on the
  node: without it a page of 100 groups would cost 200 requests (status and sessions of each).
- ``GET /api/v1/dashboard/groups/{groupId}`` is one group with its sessions as an operator
  reads them: heartbeat age, liveness and the remaining grant (ValidFor) computed by the node.
- ``GET /api/v1/dashboard/events`` is a server-sent event stream naming the groups whose
  replicated state changed, so an open page refreshes within a second of a failover.
- ``GET /api/v1/dashboard/me`` says who the credentials belong to, so the page shows an
  administrator's buttons only to administrators (the server refuses others anyway).

Every data route needs the ``users`` role, like the rest of the read API; the page sends the
user's own credentials with each request.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from cfs_cluster import engine
from cfs_cluster.api.errors import render
from cfs_cluster.api.requests import node_of
from cfs_cluster.cluster.liveness import GroupLiveness
from cfs_cluster.cluster.node import Node
from cfs_cluster.cluster.reads import ReadView, parse_stale
from cfs_cluster.errors import BadRequest, CfsError, NotFound, TooManyRequests
from cfs_cluster.protocol.bodies import ErrorResponse
from cfs_cluster.protocol.wire import (
    TICKS_PER_SECOND,
    ClientRole,
    format_datetime,
    format_timespan,
    ticks_from_unix,
)
from cfs_cluster.security.auth import refusal_headers
from cfs_cluster.security.roles import ADMINISTRATORS

__all__ = ["EVENTS_PATH", "router"]

router = APIRouter(tags=["dashboard"])
PREFIX = "/api/v1/dashboard"
EVENTS_PATH = PREFIX + "/events"
MAX_PAGE = 1000
MAX_FILTER = 256
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 503)
}

# --------------------------------------------------------------------------- who am I


@router.get(
    PREFIX + "/me",
    summary="Whether authentication is on and, for the credentials sent, the user and role "
    "(the dashboard's login; public: without credentials it names nobody)",
    responses=_ERRORS,
)
async def me(request: Request) -> Response:
    node = node_of(request)
    if not node.auth.enabled():
        # An open cluster (--auth auto, no account yet) lets everyone do everything.
        return JSONResponse({"Name": None, "Role": ADMINISTRATORS, "Authentication": False})
    authorization = request.headers.get("authorization")
    if authorization is None:
        # The page asks this before anyone logged in; a 401 here would be noise in its console.
        return JSONResponse({"Name": None, "Role": None, "Authentication": True})
    client = request.client
    source = client.host if client else "unknown"
    try:  # the same checks, back-off and cache as every other request (auth.Authenticator)
        who = await node.auth.authenticate(authorization.encode("latin-1"), source)
    except CfsError as exc:
        node.auth.on_failure("backoff" if isinstance(exc, TooManyRequests) else "bad_credentials")
        refusal = render(exc)
        refusal.raw_headers.extend(refusal_headers(exc))  # Basic and Bearer: two challenges
        return refusal
    return JSONResponse({"Name": who.name, "Role": who.role, "Authentication": True})


# --------------------------------------------------------------------------- group summaries

SORT_KEYS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "id": lambda row: row["Id"],
    "primary": lambda row: row["Primary"] or "",
    "pendingprimary": lambda row: row["PendingPrimary"] or "",
    "sessions": lambda row: row["Sessions"],
    "epoch": lambda row: row["Epoch"],
    "lastdecisiontime": lambda row: row["_decision"],
}
SORT_NAMES = "Id, Primary, PendingPrimary, Sessions, Epoch or LastDecisionTime"


@router.get(
    PREFIX + "/groups",
    summary="One page of group summaries: Primary, PendingPrimary, sessions (live), epoch, "
    "data time and last decision; filtered and sorted by the node",
    responses=_ERRORS,
)
async def group_page(
    request: Request,
    skip: int = Query(0, ge=0, le=1_000_000),
    count: int = Query(100, ge=1, le=MAX_PAGE),
    filter_text: str = Query(
        "",
        alias="filter",
        max_length=MAX_FILTER,
        description="case-insensitive substring of the group id or name, Primary or PendingPrimary",
    ),
    sort: str = Query("Id", description=SORT_NAMES),
    order: str = Query("asc", description="asc or desc"),
    without_primary: bool = Query(
        False, alias="withoutPrimary", description="only groups that have no Primary"
    ),
) -> Response:
    key = SORT_KEYS.get(sort.lower())
    if key is None:
        raise BadRequest(f"sort must be one of {SORT_NAMES}.", parameters={"sort": sort[:64]})
    if order.lower() not in ("asc", "desc"):
        raise BadRequest("order must be asc or desc.", parameters={"order": order[:64]})
    node = node_of(request)
    select = _Selection(filter_text.lower(), without_primary, key, order.lower() == "desc")
    # The page's ids decide which groups' live heartbeats the read barrier fetches; the page is
    # then computed again from the state the barrier guarantees (a group may have moved).
    ids = [row["Id"] for row in select.rows(node)[skip : skip + count]]
    view = await _read(node, request, ids)
    rows = select.rows(node)
    now = ticks_from_unix(time.time())
    with node.replicator.read() as state:
        page = [
            _summary(state.groups[row["Id"]], view.group(row["Id"]), now)
            for row in rows[skip : skip + count]
            if row["Id"] in state.groups
        ]
        total = len(state.groups)
    return JSONResponse(
        {"Total": total, "Matched": len(rows), "Skip": skip, "Groups": page},
        headers=_view_headers(view),
    )


@dataclass(frozen=True)
class _Selection:
    needle: str
    without_primary: bool
    key: Callable[[dict[str, Any]], Any]
    descending: bool

    def rows(self, node: Node) -> list[dict[str, Any]]:
        """Sort keys of every group that matches, in page order (cheap: no liveness)."""
        with node.replicator.read() as state:
            rows = [_sort_row(g) for g in state.groups.values() if self._matches(g)]
        rows.sort(key=lambda row: row["Id"])  # ties keep Id order either way
        rows.sort(key=self.key, reverse=self.descending)
        return rows

    def _matches(self, group: engine.Group) -> bool:
        if self.without_primary and group.primary is not None:
            return False
        if not self.needle:
            return True
        fields = (group.id, group.name or "", group.primary or "", group.pending or "")
        return any(self.needle in text.lower() for text in fields)


def _sort_row(group: engine.Group) -> dict[str, Any]:
    return {
        "Id": group.id,
        "Primary": group.primary,
        "PendingPrimary": group.pending,
        "Sessions": len(group.sessions),
        "Epoch": group.epoch,
        "_decision": group.events[-1].time if group.events else 0,
    }


def _summary(group: engine.Group, live: GroupLiveness | None, now: int) -> dict[str, Any]:
    records = [_record(session, live) for session in group.sessions.values()]
    ldpt = max(group.last_data_processed, live.last_data_processed if live else 0)
    last = group.events[-1] if group.events else None
    override = next((s.id for s in group.sessions.values() if s.override), None)
    return {
        "Id": group.id,
        "Name": group.name,
        "FailoverTimeout": format_timespan(group.timeout),
        "Primary": group.primary,
        "PendingPrimary": group.pending,
        "Sessions": len(group.sessions),
        "LiveSessions": sum(1 for r in records if _is_live(r, group, now)),
        "Epoch": group.epoch,
        "LastDataProcessedTime": format_datetime(ldpt) if ldpt else None,
        "LastDecisionTime": format_datetime(last.time) if last else None,
        "LastDecisionReason": last.reason if last else None,
        "Override": override,
    }


# --------------------------------------------------------------------------- one group


@router.get(
    PREFIX + "/groups/{group_id}",
    summary="One group's summary and its sessions with heartbeat age, liveness and ValidFor",
    responses=_ERRORS,
)
async def group_detail(request: Request, group_id: str) -> Response:
    node = node_of(request)
    view = await _read(node, request, [group_id])
    live = view.group(group_id)
    now = ticks_from_unix(time.time())
    fraction = node.settings.failover.validity_fraction
    with node.replicator.read() as state:
        group = state.groups.get(group_id)
        if group is None:
            raise NotFound(f"Failover group '{group_id}' was not found.")
        body = {
            "Group": _summary(group, live, now),
            "Sessions": [
                _session_detail(group, s, _record(s, live), now, fraction)
                for s in group.sessions.values()
            ],
        }
    return JSONResponse(body, headers=_view_headers(view))


def _session_detail(
    group: engine.Group,
    session: engine.Session,
    record: engine.HeartbeatRecord | None,
    now: int,
    fraction: float,
) -> dict[str, Any]:
    role = engine.role_of(group, session.id)
    valid_for = 0
    if role == ClientRole.Primary and record is not None:
        # What the holder's last heartbeat answer granted, less the time since it arrived.
        valid_for = max(0, record.received_at + int(group.timeout * fraction) - now)
    return {
        "Id": session.id,
        "Name": session.name,
        "Role": int(role),
        "FailoverScore": None if record is None else record.score,
        "HeartbeatTime": None if record is None else format_datetime(record.heartbeat_time),
        "HeartbeatAgeSeconds": None
        if record is None
        else round(max(0, now - record.received_at) / TICKS_PER_SECOND, 1),
        "Live": _is_live(record, group, now),
        "ValidFor": format_timespan(valid_for),
        "RoleOverride": int(session.override),
        "RoleOverrideExpirationTime": None
        if session.override_expiry is None
        else format_datetime(session.override_expiry),
    }


def _record(session: engine.Session, live: GroupLiveness | None) -> engine.HeartbeatRecord | None:
    """The session's last heartbeat as the deciding leader knows it, else the checkpoint's."""
    if live is None:
        return session.heartbeat
    return live.heartbeats.get(session.id, session.heartbeat)


def _is_live(record: engine.HeartbeatRecord | None, group: engine.Group, now: int) -> bool:
    """Heard within the group's FailoverTimeout: the rule the leader fails over by."""
    return record is not None and now - record.received_at <= group.timeout


async def _read(node: Node, request: Request, group_ids: list[str]) -> ReadView:
    """A linearizable view with the leader's live heartbeats of ``group_ids``, or with
    ``?stale=true`` this node's replica as it is (docs/api.md "Consistency")."""
    if parse_stale(request.scope.get("query_string", b"")):
        return node.reads.stale(group_ids)
    return await node.reads.consistent(group_ids)


def _view_headers(view: ReadView) -> dict[str, str]:
    return {name.decode(): value.decode() for name, value in view.headers()}


# --------------------------------------------------------------------------- live changes

KEEPALIVE_SECONDS = 15.0  # a comment line this often keeps proxies (HAProxy: 65 s) from closing
COALESCE_SECONDS = 0.1  # changes this close together travel as one event
MAX_STREAM_SECONDS = 600.0  # then the page reconnects: a stream never outlives a login for long
MAX_IDS_PER_EVENT = 500  # more changes than this at once: the event says "refresh everything"


@router.get(EVENTS_PATH, include_in_schema=False)
async def change_stream(request: Request) -> Response:
    node = node_of(request)
    return StreamingResponse(
        _changes(node),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _changes(node: Node) -> AsyncIterator[str]:
    """``event: groups`` with ``{"Groups": [ids] or null, "Total": n}`` after each change."""
    changed: set[str] = set()
    wake = asyncio.Event()

    def on_change(group_id: str) -> None:
        changed.add(group_id)
        wake.set()

    unsubscribe = node.coordinator.subscribe(on_change)
    stopping = asyncio.ensure_future(node.stopping.wait())
    deadline = time.monotonic() + MAX_STREAM_SECONDS
    try:
        yield "retry: 1000\n\n" + _event("hello", {"Total": _total(node)})
        while not node.stopping.is_set() and time.monotonic() < deadline:
            woken = asyncio.ensure_future(wake.wait())
            await asyncio.wait(
                {woken, stopping}, timeout=KEEPALIVE_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
            woken.cancel()
            if not changed:
                yield ": keep-alive\n\n"
                continue
            await asyncio.sleep(COALESCE_SECONDS)
            ids = sorted(changed) if len(changed) <= MAX_IDS_PER_EVENT else None
            changed.clear()
            wake.clear()
            yield _event("groups", {"Groups": ids, "Total": _total(node)})
    finally:
        unsubscribe()
        stopping.cancel()


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def _total(node: Node) -> int:
    return len(node.replicator.state.groups)
