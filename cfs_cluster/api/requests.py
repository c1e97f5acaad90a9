"""What every route reads from a request besides its body: the node, the idempotency key, who
sent it, and the view a read may be answered from (all but the first two set by the front
door)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Request

from cfs_cluster.cluster.liveness import GroupLiveness
from cfs_cluster.cluster.node import Node
from cfs_cluster.cluster.reads import ReadView
from cfs_cluster.errors import MemberAuthFailed
from cfs_cluster.security.memberauth import Caller, MemberRequest

__all__ = [
    "CALLER",
    "FROM_MEMBER",
    "READ_VIEW",
    "SENT_PATH",
    "caller_of",
    "from_member",
    "group_liveness",
    "node_of",
    "request_id",
    "require_member",
    "sent_path",
]

# Keys of the ASGI scope's "state" (``request.state``) that the front door sets.
CALLER = "cfs_caller"  # memberauth.Caller: the authenticated user or client; absent = anonymous
FROM_MEMBER = "cfs_member"  # memberauth.MemberRequest: a cluster member signed the request
READ_VIEW = "cfs_read_view"  # reads.ReadView: what a GET may answer from (its read barrier)
SENT_PATH = "cfs_sent_path"  # bytes: the path as the client sent it, before canonicalisation

MAX_REQUEST_ID = 128


def node_of(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


def group_liveness(request: Request, group_id: str) -> GroupLiveness | None:
    """The leader's live liveness of ``group_id`` as fetched by this request's read barrier;
    None when only the replicated checkpoint is known (a stale read on a follower)."""
    view: ReadView | None = getattr(request.state, READ_VIEW, None)
    return None if view is None else view.group(group_id)


def request_id(request: Request) -> str:
    """Clients may make a write idempotent across retries with a Request-Id header.

    The key is scoped to the method and (canonical) path: a client or proxy that reuses one
    Request-Id for another request must not get the earlier request's result replayed and its
    own request silently dropped (e.g. a DELETE answered 204 but not done).
    """
    given = request.headers.get("request-id")
    if given and len(given) <= MAX_REQUEST_ID:
        return f"client:{request.method}:{request.url.path}:{given}"
    return uuid.uuid4().hex


def caller_of(request: Request) -> Caller | None:
    caller: Caller | None = _state(request).get(CALLER)
    return caller


def from_member(request: Request) -> bool:
    """Whether another member sent this request (signature verified by the front door)."""
    return isinstance(_state(request).get(FROM_MEMBER), MemberRequest)


async def require_member(request: Request) -> None:
    """Dependency of every internal route: answered for members only (the front door already
    refuses unsigned requests to the internal prefix; this holds for any path that routes here).
    Async on purpose: FastAPI runs a plain ``def`` dependency in a worker thread, a thread hop
    on every relayed heartbeat batch."""
    if not from_member(request):
        raise MemberAuthFailed("This endpoint answers cluster members only.")


def _state(request: Request) -> dict[str, Any]:
    state: dict[str, Any] = request.scope.get("state") or {}
    return state


def sent_path(request: Request) -> bytes:
    """The path as the client spelled it (the front door hands FastAPI the canonical one)."""
    sent: bytes | None = _state(request).get(SENT_PATH)
    return sent if sent is not None else request.url.path.encode()
