"""`/api/v1/clientfailover`: groups, sessions, status, heartbeat, role override (spec §2.2-§2.3)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from .. import __version__, engine
from ..errors import BadRequest, NotFound
from ..liveness import HeartbeatReport
from ..models import (
    ClientSessionConfiguration,
    ErrorResponse,
    GroupConfig,
    GroupConfiguration,
    Heartbeat,
    HeartbeatBody,
    HeartbeatResponse,
    OverrideBody,
    RoleOverrideConfiguration,
    SessionConfig,
    check_id,
    group_json,
    heartbeat_json,
    load_json,
    override_json,
    session_json,
    status_json,
)
from ..node import Node
from ..wire import ticks_from_unix

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/clientfailover", tags=["clientfailover"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 409, 413, 503)
}
MAX_PAGE = 10_000


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


def _request_id(request: Request) -> str:
    """Clients may make a write idempotent across retries with a Request-Id header.

    Fix: the key is scoped to the method and (canonical) path. It was the header alone, so a
    client or proxy reusing one Request-Id for another request got the earlier request's
    result replayed and its own request silently dropped (e.g. DELETE answered 204 but not done).
    """
    given = request.headers.get("request-id")
    if given and len(given) <= 128:
        return f"client:{request.method}:{request.url.path}:{given}"
    return uuid.uuid4().hex


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


@router.get("/groups", summary="List failover groups", responses=_ERRORS)
async def list_groups(
    request: Request,
    skip: int = Query(0, ge=0),
    count: int = Query(100, ge=0, le=MAX_PAGE),
) -> Response:
    with _node(request).replicator.read() as state:
        groups = list(state.groups.values())
        page = [group_json(g) for g in groups[skip : skip + count]]
    return JSONResponse(page, headers={"Total-Count": str(len(groups))})


@router.post(
    "/groups",
    summary="Create a failover group (201 new, 200 same configuration, 409 different)",
    responses=_ERRORS,
    openapi_extra=_body_schema(GroupConfiguration),
)
async def create_group(request: Request) -> Response:
    config = GroupConfig.parse(load_json(await request.body()))
    node = _node(request)
    result = await node.submit(
        engine.CreateGroup(
            _request_id(request),
            config.id,
            config.name,
            config.description,
            config.timeout,
            config.additional_data,
        )
    )
    status = 201 if result.code == engine.Code.CREATED else 200
    return JSONResponse(group_json(_group(node, config.id)), status_code=status)


@router.get("/groups/{group_id}", summary="Get a failover group", responses=_ERRORS)
async def get_group(request: Request, group_id: str) -> dict[str, Any]:
    return group_json(_group(_node(request), group_id))


@router.delete(
    "/groups/{group_id}",
    status_code=204,
    summary="Delete a group (409 while it has sessions)",
    responses=_ERRORS,
)
async def delete_group(request: Request, group_id: str) -> Response:
    await _node(request).submit(engine.DeleteGroup(_request_id(request), group_id))
    return Response(status_code=204)


@router.get(
    "/groups/{group_id}/status", summary="Primary, pending primary and data time", responses=_ERRORS
)
async def group_status(request: Request, group_id: str) -> dict[str, Any]:
    return status_json(_group(_node(request), group_id))


@router.get("/groups/{group_id}/clientsessions", summary="List client sessions", responses=_ERRORS)
async def list_sessions(request: Request, group_id: str) -> list[dict[str, Any]]:
    with _node(request).replicator.read():
        group = _group(_node(request), group_id)
        return [session_json(group, s) for s in group.sessions.values()]


@router.post(
    "/groups/{group_id}/clientsessions",
    summary="Register a client session (201 new, 200 same, 409 different name)",
    responses=_ERRORS,
    openapi_extra=_body_schema(ClientSessionConfiguration),
)
async def create_session(request: Request, group_id: str) -> Response:
    config = SessionConfig.parse(load_json(await request.body()))
    node = _node(request)
    result = await node.submit(
        engine.RegisterSession(
            _request_id(request), group_id, config.id, config.name, config.additional_data
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
    group = _group(_node(request), group_id)
    return session_json(group, _session(group, session_id))


@router.delete(
    "/groups/{group_id}/clientsessions/{session_id}",
    status_code=204,
    summary="Unregister a client session; roles are re-evaluated at once",
    responses=_ERRORS,
)
async def delete_session(request: Request, group_id: str, session_id: str) -> Response:
    now = ticks_from_unix(time.time())
    await _node(request).submit(
        engine.DeleteSession(_request_id(request), group_id, session_id, now)
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
    )
    return heartbeat_json(await _node(request).heartbeat(report))


@router.post(
    "/groups/{group_id}/clientsessions/{session_id}/roleoverride",
    summary="Force a session to Primary (optionally for a period) or cancel with Off",
    responses=_ERRORS,
    openapi_extra=_body_schema(RoleOverrideConfiguration),
)
async def role_override(request: Request, group_id: str, session_id: str) -> dict[str, Any]:
    body = OverrideBody.parse(load_json(await request.body()))
    now = ticks_from_unix(time.time())
    expiry = None if body.period is None else now + body.period
    if expiry is not None and expiry > ticks_from_unix(253402300799):
        raise BadRequest("ExpirationPeriod reaches past the year 9999.")
    await _node(request).submit(
        engine.SetOverride(_request_id(request), group_id, session_id, body.value, expiry, now)
    )
    return override_json(body.value, expiry)
