"""`GET /metrics` (Prometheus) and a group's decision history (our extension, docs/operations.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from cfs_cluster import engine
from cfs_cluster.api.longpoll import long_poll, wait_seconds
from cfs_cluster.api.requests import node_of
from cfs_cluster.cluster.node import Node
from cfs_cluster.errors import BadRequest, NotFound
from cfs_cluster.ops.metrics import CONTENT_TYPE
from cfs_cluster.protocol.bodies import ErrorResponse
from cfs_cluster.protocol.wire import format_datetime

__all__ = ["router"]

router = APIRouter(tags=["observability"])


@router.get("/metrics", summary="Prometheus metrics of this node", response_class=Response)
async def metrics(request: Request) -> Response:
    return Response(node_of(request).metrics.render(), media_type=CONTENT_TYPE)


@router.get(
    "/api/v1/clientfailover/groups/{group_id}/events",
    summary="The group's role history: why each Primary change happened (oldest first); with "
    "after=N only the events whose Sequence is greater, held up to waitFor seconds until one comes",
    responses={code: {"model": ErrorResponse} for code in (400, 404, 503)},
)
async def group_events(
    request: Request,
    group_id: str,
    after: str | None = Query(None, description="a Sequence already seen; default: all"),
    wait_for: str | None = Query(
        None, alias="waitFor", description="seconds, 0-60, to wait for a new event; default 0"
    ),
) -> list[dict[str, Any]]:
    cursor = _sequence(after)
    wait = wait_seconds(wait_for)
    node = node_of(request)
    return await long_poll(
        request, node, group_id, wait, lambda: _news(node, group_id, cursor), "request"
    )


def _news(node: Node, group_id: str, cursor: int) -> tuple[list[dict[str, Any]], bool]:
    events = _events_after(node, group_id, cursor)
    return events, bool(events)


def _events_after(node: Node, group_id: str, cursor: int) -> list[dict[str, Any]]:
    with node.replicator.read() as state:
        group = state.groups.get(group_id)
        if group is None:
            raise NotFound(f"Failover group '{group_id}' was not found.")
        return [event_json(e) for e in group.events if e.sequence > cursor]


def _sequence(text: str | None) -> int:
    if text is None:
        return -1  # every event, also those recorded before Sequence existed (0)
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise BadRequest("after must be a non-negative integer.", parameters={"after": text[:64]})
    return int(text)


def event_json(event: engine.RoleEvent) -> dict[str, Any]:
    return {
        "Time": format_datetime(event.time),
        "Reason": event.reason,
        "Epoch": event.epoch,
        "OldPrimary": event.old_primary,
        "NewPrimary": event.new_primary,
        "PendingPrimary": event.pending,
        "Scores": dict(event.scores),
        "Sequence": event.sequence,
    }
