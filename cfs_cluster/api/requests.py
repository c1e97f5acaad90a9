"""What every route reads from a request besides its body: the node, the idempotency key, and
the view a read may be answered from."""

from __future__ import annotations

import uuid

from fastapi import Request

from cfs_cluster.cluster.liveness import GroupLiveness
from cfs_cluster.cluster.node import Node
from cfs_cluster.cluster.reads import ReadView

__all__ = ["READ_VIEW", "group_liveness", "node_of", "request_id"]

READ_VIEW = "cfs_read_view"  # request-state key, set by the front door before a GET

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
