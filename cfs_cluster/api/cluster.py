"""Cluster endpoints: membership and health for operators and load balancers, plus the relay."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from cfs_cluster.api.requests import node_of
from cfs_cluster.cluster.membership import HANDED_OVER, MemberChange
from cfs_cluster.cluster.node import Node
from cfs_cluster.cluster.relay import (
    FORWARDED_HEADER,
    RELAY_HEADER,
    RELAY_PATH,
    TERM_HEADER,
    decode_report,
    encode_answer,
    relayed_term_is_current,
)
from cfs_cluster.errors import BadRequest, CfsError, NotFound, Unavailable
from cfs_cluster.protocol.bodies import load_json

__all__ = ["router"]

router = APIRouter(tags=["cluster"])


@router.get("/healthz", summary="Process alive")
async def healthz() -> dict[str, str]:
    return {"Status": "alive"}


@router.get("/readyz", summary="200 when this node can serve: leader known, caught up")
async def readyz(request: Request) -> Response:
    ready, why = node_of(request).is_ready()
    status = 200 if ready else 503
    headers = {} if ready else {"Retry-After": "1"}
    return JSONResponse({"Ready": ready, "Reason": why}, status_code=status, headers=headers)


@router.get("/api/v1/cluster", summary="Members, leader, term, commit and applied index")
async def cluster(request: Request) -> dict[str, Any]:
    node = node_of(request)
    view = _local_view(node)
    if not node.replicator.is_leader() and not request.headers.get(FORWARDED_HEADER):
        await _merge_leader_view(node, request, view)
    return view


def _local_view(node: Node) -> dict[str, Any]:
    rep = node.replicator
    status = rep.raw_status()
    leader = rep.leader_address()
    commit = status.get("commit_idx")
    by_raft = {m.raft: m for m in rep.state.members.values()}
    statuses = {m.raft: m for m in rep.members()}
    members = []
    for raft in rep.voters():
        member = by_raft.get(raft)
        info = statuses.get(raft)
        is_self = raft == rep.self_address
        match = status.get("last_applied") if is_self else (info and info.match_index)
        members.append(
            {
                "Id": member.node_id if member else None,
                "ApiUrl": member.api_url if member else None,
                "Raft": raft,
                "Role": "leader" if raft == leader else "follower",
                "Self": is_self,
                "Reachable": True if is_self else bool(info and info.connected),
                "LastContactSeconds": None if info is None else info.last_contact,
                "MatchIndex": match,
                "Lag": None if match is None or commit is None else max(0, commit - match),
            }
        )
    leader_member = by_raft.get(leader) if leader else None
    ready, why = node.is_ready()
    return {
        "NodeId": node.settings.node_id,
        "Leader": leader_member.node_id if leader_member else None,
        "LeaderRaft": leader,
        "Term": status.get("raft_term"),
        "CommitIndex": commit,
        "AppliedIndex": status.get("last_applied"),
        "HasQuorum": status.get("has_quorum"),
        "Ready": ready,
        "ReadyReason": why,
        "Members": members,
        "MembersView": "leader" if rep.is_leader() else "local",
        "Tls": node.tls_status(),
    }


async def _merge_leader_view(node: Node, request: Request, view: dict[str, Any]) -> None:
    """Match index, lag and last contact are known only to the leader: ask it (best effort)."""
    try:
        answer = await node.relay.forward(
            "GET", "/api/v1/cluster", b"", request.headers.get("authorization"), timeout=1.0
        )
        leader_members = {m["Raft"]: m for m in answer.json()["Members"]}
    except (CfsError, ValueError, KeyError, TypeError):
        return
    if answer.status_code != 200:
        return
    for member in view["Members"]:
        seen = leader_members.get(member["Raft"])
        if seen is not None:
            for key in ("MatchIndex", "Lag", "LastContactSeconds"):
                member[key] = seen.get(key)
            member["ReachableFromLeader"] = seen.get("Reachable")
    view["MembersView"] = "leader"


# ----------------------------------------------------------------- membership (administrators)

_MEMBER_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed address or body"},
    404: {"description": "No such member"},
    409: {"description": "Unsafe change refused (quorum, unreachable node, change in progress)"},
    503: {"description": "No leader, or the change did not commit in time"},
}


@router.post(
    "/api/v1/cluster/members",
    summary="Add a voting member (one at a time; the node must already be running)",
    status_code=201,
    responses=_MEMBER_ERRORS,
    openapi_extra={
        "requestBody": {"content": {"application/json": {"example": {"Raft": "10.0.0.14:5690"}}}}
    },
)
async def add_member(request: Request) -> Response:
    body = await _object_body(request)
    return await _on_leader(request, lambda node: node.membership.add(body.get("Raft")), 201)


@router.delete(
    "/api/v1/cluster/members/{member}",
    summary="Remove a member by node id or Raft address (refused if quorum would be lost)",
    responses=_MEMBER_ERRORS,
)
async def remove_member(request: Request, member: str) -> Response:
    return await _on_leader(request, lambda node: node.membership.remove(member))


@router.post(
    "/api/v1/cluster/transfer-leader",
    summary="Hand Raft leadership to a member (or the most caught-up one)",
    responses=_MEMBER_ERRORS,
    openapi_extra={"requestBody": {"content": {"application/json": {"example": {"To": "n2"}}}}},
)
async def transfer_leader(request: Request) -> Response:
    raw = await request.body()
    body = await _object_body(request) if raw.strip() else {}
    to = body.get("To")
    if to is not None and not isinstance(to, str):
        raise BadRequest("To must be a node id or a Raft address.")
    return await _on_leader(request, lambda node: node.membership.transfer_leadership(to))


async def _object_body(request: Request) -> dict[str, Any]:
    body = load_json(await request.body())
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return body


async def _on_leader(
    request: Request,
    action: Callable[[Node], Awaitable[MemberChange]],
    status: int = 200,
) -> Response:
    """Run ``action`` here if this node leads, else hand the request to the leader."""
    node = node_of(request)
    if node.replicator.is_leader():
        change = await action(node)
        if change.action != HANDED_OVER:
            return JSONResponse(_change_body(change), status_code=status)
    elif request.headers.get(FORWARDED_HEADER):
        raise Unavailable("Leadership moved while the request was forwarded; retry.", retry_after=1)
    answer = await node.relay.forward(
        request.method, request.url.path, await request.body(), request.headers.get("authorization")
    )
    headers = {k: v for k, v in answer.headers.items() if k.lower() in ("retry-after",)}
    return Response(
        answer.content,
        status_code=answer.status_code,
        headers=headers,
        media_type=answer.headers.get("content-type", "application/json"),
    )


def _change_body(change: MemberChange) -> dict[str, Any]:
    return {
        "Action": change.action,
        "Raft": change.raft,
        "Voters": list(change.voters),
        "LeaderRaft": change.leader,
        "CaughtUp": change.caught_up,
    }


@router.post(RELAY_PATH, include_in_schema=False)
async def relay(request: Request) -> Response:
    """Heartbeats relayed by a follower, answered one by one in the same order."""
    node = node_of(request)
    token = request.headers.get(RELAY_HEADER, "")
    if not hmac.compare_digest(token, node.relay_token):
        raise NotFound("No resource exists at this path.")
    items = load_json(await request.body())
    if not isinstance(items, list):
        return JSONResponse({"error": "batch must be a list"}, status_code=400)
    if not node.coordinator.can_decide():
        raise Unavailable("This node is not the leader with a current majority.", retry_after=0.5)
    if not relayed_term_is_current(request.headers.get(TERM_HEADER), node.replicator.term()):
        raise Unavailable("This node leads an older term than the relaying node.", retry_after=0.5)
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
