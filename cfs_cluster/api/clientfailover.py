"""`/api/v1/clientfailover`: groups, sessions, status, heartbeat, role override (spec §2.2-§2.3)."""

from __future__ import annotations

import bisect
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from cfs_cluster import __version__, engine
from cfs_cluster.api.longpoll import long_poll, wait_seconds
from cfs_cluster.api.models import (
    GroupConfig,
    HeartbeatBody,
    OverrideBody,
    SessionConfig,
    check_id,
    group_json,
    heartbeat_json,
    override_json,
    session_json,
    status_json,
)
from cfs_cluster.api.requests import group_liveness, node_of, request_id
from cfs_cluster.api.schema import (
    ClientSessionConfiguration,
    GroupConfiguration,
    Heartbeat,
    HeartbeatResponse,
    RoleOverrideConfiguration,
)
from cfs_cluster.cluster.node import Node
from cfs_cluster.errors import BadRequest, NotFound
from cfs_cluster.protocol.bodies import ErrorResponse, load_json
from cfs_cluster.protocol.heartbeat import HeartbeatReport
from cfs_cluster.protocol.wire import ClientRole, format_datetime, parse_enum, ticks_from_unix

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/clientfailover", tags=["clientfailover"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 409, 413, 503)
}
MAX_PAGE = 10_000


def _body_schema(model: type[Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def _group(node: Node, group_id: str) -> engine.Group:
    group = node.replicator.state.groups.get(group_id)
    if group is None:
        raise NotFound(f"Failover group '{group_id}' was not found.")
    return group


def _session(group: engine.Group, session_id: str) -> engine.Session:
    session = group.sessions.get(session_id)
    if session is None:
        raise NotFound(f"Client session '{session_id}' was not found in group '{group.id}'.")
    return session


@router.get("", summary="Application information")
async def info() -> dict[str, str]:
    return {"Version": __version__}


@router.get("/groups", summary="List failover groups (ordered by Id)", responses=_ERRORS)
async def list_groups(
    request: Request,
    skip: int = Query(0, ge=0),
    count: int = Query(100, ge=0, le=MAX_PAGE),
    after: str | None = Query(
        None, description="Only groups whose Id sorts after this one (a walk that never skips)"
    ),
) -> Response:
    # Ordered by Id, never by insertion: every node orders alike, and a re-created group
    # does not move. ``after`` (the last Id of the previous page) pages by key, so a walk
    # over a changing set neither repeats nor skips a group that existed throughout.
    with node_of(request).replicator.read() as state:
        ids = sorted(state.groups)
        total = len(ids)
        if after is not None:
            ids = ids[bisect.bisect_right(ids, after) :]
        page = [group_json(state.groups[g]) for g in ids[skip : skip + count]]
    return JSONResponse(page, headers={"Total-Count": str(total)})


@router.post(
    "/groups",
    summary="Create a failover group (201 new, 200 same configuration, 409 different)",
    responses=_ERRORS,
    openapi_extra=_body_schema(GroupConfiguration),
)
async def create_group(request: Request) -> Response:
    config = GroupConfig.parse(load_json(await request.body()))
    node = node_of(request)
    result = await node.submit(
        engine.CreateGroup(
            request_id(request),
            config.id,
            config.name,
            config.description,
            config.timeout,
            config.additional_data,
            max_groups=node.settings.failover.max_groups,
        )
    )
    status = 201 if result.code == engine.Code.CREATED else 200
    return JSONResponse(group_json(_group(node, config.id)), status_code=status)


@router.get("/groups/{group_id}", summary="Get a failover group", responses=_ERRORS)
async def get_group(request: Request, group_id: str) -> dict[str, Any]:
    return group_json(_group(node_of(request), group_id))


@router.delete(
    "/groups/{group_id}",
    status_code=204,
    summary="Delete a group (409 while it has sessions)",
    responses=_ERRORS,
)
async def delete_group(request: Request, group_id: str) -> Response:
    await node_of(request).submit(engine.DeleteGroup(request_id(request), group_id))
    return Response(status_code=204)


@router.get(
    "/groups/{group_id}/status", summary="Primary, pending primary and data time", responses=_ERRORS
)
async def group_status(request: Request, group_id: str) -> dict[str, Any]:
    return status_json(_group(node_of(request), group_id), group_liveness(request, group_id))


@router.get("/groups/{group_id}/clientsessions", summary="List client sessions", responses=_ERRORS)
async def list_sessions(request: Request, group_id: str) -> list[dict[str, Any]]:
    live = group_liveness(request, group_id)
    with node_of(request).replicator.read():
        group = _group(node_of(request), group_id)
        return [session_json(group, s, live) for s in group.sessions.values()]


@router.post(
    "/groups/{group_id}/clientsessions",
    summary="Register a client session (201 new, 200 same, 409 different name)",
    responses=_ERRORS,
    openapi_extra=_body_schema(ClientSessionConfiguration),
)
async def create_session(request: Request, group_id: str) -> Response:
    config = SessionConfig.parse(load_json(await request.body()))
    node = node_of(request)
    result = await node.submit(
        engine.RegisterSession(
            request_id(request),
            group_id,
            config.id,
            config.name,
            config.additional_data,
            max_sessions=node.settings.failover.max_sessions_per_group,
        )
    )
    group = _group(node, group_id)
    status = 201 if result.code == engine.Code.CREATED else 200
    return JSONResponse(session_json(group, _session(group, config.id)), status_code=status)


@router.get(
    "/groups/{group_id}/clientsessions/{session_id}",
    summary="Get a client session",
    responses=_ERRORS,
)
async def get_session(request: Request, group_id: str, session_id: str) -> dict[str, Any]:
    group = _group(node_of(request), group_id)
    return session_json(group, _session(group, session_id), group_liveness(request, group_id))


@router.delete(
    "/groups/{group_id}/clientsessions/{session_id}",
    status_code=204,
    summary="Unregister a client session; roles are re-evaluated at once",
    responses=_ERRORS,
)
async def delete_session(request: Request, group_id: str, session_id: str) -> Response:
    now = ticks_from_unix(node_of(request).wall())
    await node_of(request).submit(
        engine.DeleteSession(request_id(request), group_id, session_id, now)
    )
    return Response(status_code=204)


@router.post(
    "/groups/{group_id}/clientsessions/{session_id}/heartbeat",
    summary="Post a heartbeat; answers the session's role",
    response_model=HeartbeatResponse,
    responses={**_ERRORS, 429: {"model": ErrorResponse}},
    openapi_extra=_body_schema(Heartbeat),
)
async def heartbeat(request: Request, group_id: str, session_id: str) -> dict[str, Any]:
    # Normally answered by the front door's lean path; this route documents it in OpenAPI and
    # serves the same contract if the front door is bypassed.
    body = HeartbeatBody.parse(load_json(await request.body()))
    report = HeartbeatReport(
        check_id(group_id, "groupId"),
        check_id(session_id, "sessionId"),
        body.score,
        body.last_data_processed,
        body.heartbeat_time,
        body.held_role,
        body.held_epoch,
    )
    return heartbeat_json(await node_of(request).heartbeat(report))


@router.post(
    "/groups/{group_id}/clientsessions/{session_id}/roleoverride",
    summary="Force a session to Primary (optionally for a period) or cancel with Off",
    responses=_ERRORS,
    openapi_extra=_body_schema(RoleOverrideConfiguration),
)
async def role_override(request: Request, group_id: str, session_id: str) -> dict[str, Any]:
    body = OverrideBody.parse(load_json(await request.body()))
    # Expiry on the receiving node's wall clock; the leader compares it with its own
    # (docs/safety.md, *Clocks*).
    now = ticks_from_unix(node_of(request).wall())
    expiry = None if body.period is None else now + body.period
    if expiry is not None and expiry > ticks_from_unix(253402300799):
        raise BadRequest("ExpirationPeriod reaches past the year 9999.")
    await node_of(request).submit(
        engine.SetOverride(request_id(request), group_id, session_id, body.value, expiry, now)
    )
    return override_json(body.value, expiry)


# --------------------------------------------------------------------------- role long-poll


@router.get(
    "/groups/{group_id}/clientsessions/{session_id}/role",
    summary="Long-poll a session's role (extension): answers at once when Role or Epoch differs "
    "from knownRole/knownEpoch, else when it changes or after waitFor seconds. Never grants.",
    responses=_ERRORS,
)
async def session_role(
    request: Request,
    group_id: str,
    session_id: str,
    wait_for: str | None = Query(None, alias="waitFor", description="seconds, 0-60; default 0"),
    known_epoch: str | None = Query(None, alias="knownEpoch"),
    known_role: str | None = Query(None, alias="knownRole", description="name or number"),
) -> dict[str, Any]:
    # Works on every node: roles are replicated state, and every node's Coordinator wakes its
    # watchers when an applied entry touches the group. Only heartbeats grant, so an agent
    # that learns here it is the candidate sends a heartbeat at once to take the role.
    wait = wait_seconds(wait_for)
    role = None if known_role is None else parse_enum(ClientRole, known_role, "knownRole")
    epoch = None if known_epoch is None else _epoch(known_epoch)
    node = node_of(request)
    if role is None and epoch is None:  # nothing known: wait for a change from now
        first, _ = _role_answer(node, group_id, session_id)
        role, epoch = ClientRole(first["Role"]), first["Epoch"]

    def look() -> tuple[dict[str, Any], bool]:
        answer, grant_free = _role_answer(node, group_id, session_id)
        # A candidate that knows it is PendingPrimary is waiting for the old holder's grant
        # to be released: that is news too, since its next heartbeat now takes it.
        ready = role == ClientRole.PendingPrimary and grant_free
        return answer, _differs(answer, role, epoch) or ready

    return await long_poll(request, node, group_id, wait, look, "long-poll")


def _epoch(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise BadRequest(
            "knownEpoch must be a non-negative integer.", parameters={"knownEpoch": text[:64]}
        )
    return int(text)


def _role_answer(node: Node, group_id: str, session_id: str) -> tuple[dict[str, Any], bool]:
    """The long-poll body, and whether no session holds the Primary grant now."""
    group = _group(node, group_id)
    _session(group, session_id)
    answer = {
        "Role": int(engine.role_of(group, session_id)),
        "Epoch": group.epoch,
        "LastDataProcessedTime": format_datetime(group.last_data_processed),
    }
    return answer, group.primary is None


def _differs(answer: dict[str, Any], role: ClientRole | None, epoch: int | None) -> bool:
    return (role is not None and answer["Role"] != role) or (
        epoch is not None and answer["Epoch"] != epoch
    )
