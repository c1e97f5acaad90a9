"""`GET /metrics` (Prometheus) and a group's decision history (our extension, docs/operations.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cfs_cluster import engine
from cfs_cluster.api.requests import node_of
from cfs_cluster.errors import NotFound
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
    summary="The group's role history: why each Primary change happened (newest last)",
    responses={404: {"model": ErrorResponse}},
)
async def group_events(request: Request, group_id: str) -> list[dict[str, Any]]:
    with node_of(request).replicator.read() as state:
        group = state.groups.get(group_id)
        if group is None:
            raise NotFound(f"Failover group '{group_id}' was not found.")
        return [event_json(e) for e in group.events]


def event_json(event: engine.RoleEvent) -> dict[str, Any]:
    return {
        "Time": format_datetime(event.time),
        "Reason": event.reason,
        "Epoch": event.epoch,
        "OldPrimary": event.old_primary,
        "NewPrimary": event.new_primary,
        "PendingPrimary": event.pending,
        "Scores": dict(event.scores),
    }
