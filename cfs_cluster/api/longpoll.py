"""Long-polls (extensions: a session's role, a group's events): hold a request until the
replicated state has news for it, its ``waitFor`` seconds pass, the client leaves, or the node
stops."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import TypeVar

from fastapi import Request

from cfs_cluster.cluster.node import Node
from cfs_cluster.errors import BadRequest, Unavailable

__all__ = ["MAX_WAIT", "client_gone", "long_poll", "wait_seconds"]

MAX_WAIT = 60.0  # seconds a long-poll may be held

_Answer = TypeVar("_Answer")


def wait_seconds(text: str | None) -> float:
    """The ``waitFor`` query parameter: seconds from 0 to MAX_WAIT; 0 when absent."""
    if text is None:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= MAX_WAIT:  # also refuses nan
        raise BadRequest(
            f"waitFor must be a number of seconds from 0 to {MAX_WAIT:g}.",
            parameters={"waitFor": text[:64]},
        )
    return value


async def client_gone(request: Request) -> None:
    """Return when the client disconnects, so an abandoned long-poll does not linger."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def long_poll(
    request: Request,
    node: Node,
    group_id: str,
    wait: float,
    look: Callable[[], tuple[_Answer, bool]],
    what: str,
) -> _Answer:
    """The first answer of ``look`` (answer, news) that is news, or its answer once ``wait``
    seconds have passed or the client left; 503 while the node stops (``what`` names the
    request to send to another node). ``look`` runs again whenever an applied entry touches
    ``group_id``."""
    deadline = time.monotonic() + wait
    gone = asyncio.ensure_future(client_gone(request))
    stopping = asyncio.ensure_future(node.stopping.wait())
    change: asyncio.Future[bool] | None = None
    try:
        while True:
            if node.stopping.is_set():
                raise Unavailable(
                    f"This node is stopping; send the {what} to another node.", retry_after=1
                )
            # The watcher is registered before the state is read (sleep(0) lets the task run
            # up to its wait), so a change applied in between still wakes us.
            remaining = max(0.0, deadline - time.monotonic())
            change = asyncio.ensure_future(node.coordinator.wait_for_change(group_id, remaining))
            await asyncio.sleep(0)
            answer, news = look()
            if news or remaining <= 0 or gone.done():
                return answer
            await asyncio.wait({change, gone, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        stopping.cancel()
        if change is not None:
            change.cancel()
