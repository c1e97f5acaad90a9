"""Cluster endpoints: membership and health for operators and load balancers, plus the relay."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ..errors import CfsError, NotFound, Unavailable
from ..forwarding import RELAY_HEADER, RELAY_PATH, decode_report, encode_answer
from ..models import load_json
from ..node import Node

__all__ = ["router"]

router = APIRouter(tags=["cluster"])


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


@router.get("/healthz", summary="Process alive")
async def healthz() -> dict[str, str]:
    return {"Status": "alive"}


@router.get("/readyz", summary="200 when this node can serve: leader known, caught up")
async def readyz(request: Request) -> Response:
    ready, why = _node(request).is_ready()
    status = 200 if ready else 503
    headers = {} if ready else {"Retry-After": "1"}
    return JSONResponse({"Ready": ready, "Reason": why}, status_code=status, headers=headers)


@router.get("/api/v1/cluster", summary="Members, leader, term, commit and applied index")
async def cluster(request: Request) -> dict[str, Any]:
    node = _node(request)
    rep = node.replicator
    status = rep.raw_status()
    leader = rep.leader_address()
    by_raft = {m.raft: m for m in rep.state.members.values()}
    members = []
    statuses = {m.raft: m for m in rep.members()}
    for raft in sorted([rep.self_address, *rep.other_addresses()]):
        member = by_raft.get(raft)
        info = statuses.get(raft)
        is_self = raft == rep.self_address
        members.append(
            {
                "Id": member.node_id if member else None,
                "ApiUrl": member.api_url if member else None,
                "Raft": raft,
                "Role": "leader" if raft == leader else "follower",
                "Self": is_self,
                "Reachable": True if is_self else bool(info and info.connected),
                "LastContactSeconds": None if info is None else info.last_contact,
                "MatchIndex": None if info is None else info.match_index,
            }
        )
    leader_member = by_raft.get(leader) if leader else None
    ready, why = node.is_ready()
    return {
        "NodeId": node.settings.node_id,
        "Leader": leader_member.node_id if leader_member else None,
        "LeaderRaft": leader,
        "Term": status.get("raft_term"),
        "CommitIndex": status.get("commit_idx"),
        "AppliedIndex": status.get("last_applied"),
        "HasQuorum": status.get("has_quorum"),
        "Ready": ready,
        "ReadyReason": why,
        "Members": members,
    }


@router.post(RELAY_PATH, include_in_schema=False)
async def relay(request: Request) -> Response:
    """Heartbeats relayed by a follower, answered one by one in the same order."""
    node = _node(request)
    token = request.headers.get(RELAY_HEADER, "")
    if not hmac.compare_digest(token, node.relay_token):
        raise NotFound("No resource exists at this path.")
    items = load_json(await request.body())
    if not isinstance(items, list):
        return JSONResponse({"error": "batch must be a list"}, status_code=400)
    if not node.coordinator.can_decide():
        raise Unavailable("This node is not the leader with a current majority.", retry_after=0.5)
    results = await asyncio.gather(*(_one(node, item) for item in items))
    return JSONResponse(results)


async def _one(node: Node, item: Any) -> dict[str, Any]:
    try:
        answer = await node.coordinator.heartbeat(decode_report(item))
    except CfsError as exc:
        return {"status": exc.status, "reason": exc.reason}
    except (TypeError, ValueError):
        return {"status": 400, "reason": "malformed relay item"}
    return {"ok": encode_answer(answer)}
