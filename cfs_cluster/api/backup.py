"""`GET /api/v1/cluster/backup`: a consistent, checksummed copy of the replicated state
(administrators; see backup.py for the format and docs/operations.md for restore)."""

from __future__ import annotations

import pickle
import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cfs_cluster.cluster.node import Node
from cfs_cluster.errors import Unavailable
from cfs_cluster.ops.backup import BACKUP_PATH, encode_backup, snapshot_info
from cfs_cluster.protocol.bodies import ErrorResponse

__all__ = ["router"]

router = APIRouter(tags=["cluster"])


@router.get(
    BACKUP_PATH,
    summary="Download a backup of the replicated state (administrators)",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        503: {"model": ErrorResponse, "description": "This node is not caught up; retry"},
    },
)
async def backup(request: Request) -> Response:
    node: Node = request.app.state.node
    ready, why = node.is_ready()
    if not ready:  # a node that is behind would hand out an old state
        raise Unavailable(f"This node cannot take a backup now: {why}.", retry_after=1)
    rep = node.replicator
    with rep.read() as state:  # the apply lock: the pickle is one applied prefix of the log
        blob = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        status = rep.raw_status()
    info = snapshot_info(
        node.settings.node_id,
        int(status.get("raft_term") or 0),
        int(status.get("last_applied") or 0),
        time.time(),
    )
    name = f"cfs-backup-{info.time.replace(':', '')}.cfsbak"
    return Response(
        encode_backup(blob, info),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
