"""Cluster endpoints: membership and health for operators and load balancers, plus the relay."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from cfs_cluster import __version__
from cfs_cluster.api.models import relayed_batch, relayed_report
from cfs_cluster.api.requests import caller_of, from_member, node_of, require_member
from cfs_cluster.cluster.membership import HANDED_OVER, MemberChange
from cfs_cluster.cluster.node import Node
from cfs_cluster.cluster.relay import MAX_BATCH, encode_answer, relayed_term_is_current
from cfs_cluster.errors import BadRequest, CfsError, Unavailable
from cfs_cluster.protocol.bodies import load_json
from cfs_cluster.protocol.heartbeat import PING_PATH, READ_PATH, RELAY_PATH, HeartbeatAnswer

__all__ = ["internal_router", "router"]

router = APIRouter(tags=["cluster"])
# Member-to-member endpoints: never in the OpenAPI document, answered to signed requests only.
internal_router = APIRouter(include_in_schema=False, dependencies=[Depends(require_member)])


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
    if not node.replicator.is_leader() and not from_member(request):
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
        "Version": __version__,
        "ApiUrl": node.settings.api_url,
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
        "MemberKey": node.member_auth.current_kid(),
    }


async def _merge_leader_view(node: Node, request: Request, view: dict[str, Any]) -> None:
    """Match index, lag and last contact are known only to the leader: ask it (best effort)."""
    try:
        answer = await node.relay.request_leader(
            "GET", "/api/v1/cluster", caller=caller_of(request), timeout=1.0
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
            return JSONResponse(_change_body(node, change), status_code=status)
    elif from_member(request):
        raise Unavailable("Leadership moved while the request was forwarded; retry.", retry_after=1)
    answer = await node.relay.request_leader(
        request.method, request.url.path, await request.body(), caller_of(request), timeout=30.0
    )
    headers = {k: v for k, v in answer.headers.items() if k.lower() in ("retry-after",)}
    return Response(
        answer.content,
        status_code=answer.status_code,
        headers=headers,
        media_type=answer.headers.get("content-type", "application/json"),
    )


def _change_body(node: Node, change: MemberChange) -> dict[str, Any]:
    ids = {m.raft: m.node_id for m in node.replicator.state.members.values()}
    return {
        "Action": change.action,
        "Id": ids.get(change.raft),
        "Raft": change.raft,
        "Voters": list(change.voters),
        "VoterIds": [ids.get(raft) for raft in change.voters],
        "Leader": ids.get(change.leader) if change.leader else None,
        "LeaderRaft": change.leader,
        "CaughtUp": change.caught_up,
    }


@router.post(
    "/api/v1/cluster/member-key/rotate",
    summary="New key for the members' internal channel; the previous one verifies for 60 s",
    status_code=201,
    responses={503: {"description": "The rotation did not commit in time; retry"}},
)
async def rotate_member_key(request: Request) -> Response:
    key = await node_of(request).rotate_member_key()
    created = dt.datetime.fromtimestamp(key.created_at, dt.UTC).isoformat()
    return JSONResponse({"Kid": key.kid, "CreatedAt": created}, status_code=201)


# ----------------------------------------------------------------- internal (members only)


@internal_router.get(PING_PATH)
async def ping(request: Request) -> dict[str, str]:
    """A follower's probe: it reached this node, which verified its signature."""
    return {"NodeId": node_of(request).settings.node_id}


@internal_router.post(READ_PATH)
async def member_read(request: Request) -> Response:
    """A follower's read barrier: the commit index confirmed in this leader's term, and the
    live liveness of the groups the follower is about to show (reads.py)."""
    node = node_of(request)
    body = load_json(await request.body())
    groups = body.get("Groups") if isinstance(body, dict) else None
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise BadRequest("Groups must be a list of group ids.")
    return JSONResponse(await node.reads.for_follower(groups))


@internal_router.post(RELAY_PATH)
async def relay(request: Request) -> Response:
    """Heartbeats relayed by a follower, answered one by one in the same order (the front door
    answers this route itself, ``answer_relay``; this route documents it and serves callers
    that reach the app another way)."""
    return JSONResponse(await answer_relay(node_of(request), await request.body()))


async def answer_relay(node: Node, body: bytes) -> list[dict[str, Any]]:
    """The answers to a relayed batch, in its order. Items the steady-state fast path answers
    at once cost no task (``Node.answer_relayed_now``); the others are awaited together."""
    term, items = relayed_batch(load_json(body))
    if len(items) > MAX_BATCH:
        raise BadRequest(f"A relayed batch is a list of at most {MAX_BATCH} heartbeats.")
    if not node.coordinator.can_decide():
        raise Unavailable("This node is not the leader with a current majority.", retry_after=0.5)
    if not relayed_term_is_current(term, node.replicator.term()):
        raise Unavailable("This node leads an older term than the relaying node.", retry_after=0.5)
    results: list[dict[str, Any]] = []
    waiting: list[tuple[int, Coroutine[Any, Any, HeartbeatAnswer]]] = []
    for item in items:
        try:
            outcome = node.answer_relayed_now(relayed_report(item))
        except CfsError as exc:
            results.append(_refused(exc))
            continue
        if isinstance(outcome, HeartbeatAnswer):
            results.append({"ok": encode_answer(outcome)})
        else:
            waiting.append((len(results), outcome))
            results.append({})
    if waiting:
        answers = await asyncio.gather(*(_settle(c) for _, c in waiting))
        for (index, _), answer in zip(waiting, answers, strict=True):
            results[index] = answer
    return results


async def _settle(pending: Coroutine[Any, Any, HeartbeatAnswer]) -> dict[str, Any]:
    try:
        answer = await pending
    except CfsError as exc:
        return _refused(exc)
    return {"ok": encode_answer(answer)}


def _refused(exc: CfsError) -> dict[str, Any]:
    return {"status": exc.status, "reason": exc.reason, "retry_after": exc.retry_after}
