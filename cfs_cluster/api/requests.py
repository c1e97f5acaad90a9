"""What every route reads from a request besides its body: the node, and the idempotency key."""

from __future__ import annotations

import uuid

from fastapi import Request

from cfs_cluster.cluster.node import Node

__all__ = ["node_of", "request_id"]

MAX_REQUEST_ID = 128


def node_of(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


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
