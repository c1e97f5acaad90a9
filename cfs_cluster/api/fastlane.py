"""The heartbeat lane: one heartbeat answered with as little as possible between the socket and
the liveness coordinator.

A heartbeat is the one request adapters send all the time (every session every T/2); under
ASGI it paid for a scope, an asyncio task, an event per body, two coroutine hops into the
route, and two socket writes for the answer (uvicorn writes the head and the body apart): more
than the liveness bookkeeping it exists for. The node's HTTP protocol (api/server.py) hands
a heartbeat with a body of known size straight to ``HeartbeatLane.answer`` when its body is
complete, and writes the reply in one piece. The answer is synchronous whenever nothing has
to be waited for — a cached credential (``Authenticator.check_now``) and the leader's
steady-state fast path (``Coordinator.heartbeat_now``); a follower's relayed heartbeat resolves
through the relay's future without a task of its own; only a first credential check or a
decision runs as a coroutine.

The decisions are those of the ASGI front door, which uses the same lane
(``answer_authorized``) for heartbeats it serves itself: same route, role, validation, limits
and errors. Every failure is an ErrorResponse; an unexpected one is logged and answered 500,
never left hanging.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from cfs_cluster.api.errors import error_response_parts
from cfs_cluster.api.models import HeartbeatBody, check_id, heartbeat_payload
from cfs_cluster.cluster.node import Node
from cfs_cluster.errors import CfsError, Unavailable
from cfs_cluster.protocol.bodies import load_json
from cfs_cluster.protocol.heartbeat import HeartbeatAnswer, HeartbeatReport
from cfs_cluster.security.auth import NOT_NOW, refusal_headers

__all__ = ["HEARTBEAT", "JSON_HEADERS", "HeartbeatLane", "Reply"]

log = logging.getLogger("cfs.api")

HEARTBEAT = "/api/v1/clientfailover/groups/{group_id}/clientsessions/{session_id}/heartbeat"
JSON_HEADERS = [(b"content-type", b"application/json; charset=utf-8")]

Reply = tuple[int, list[tuple[bytes, bytes]], bytes]  # status, headers, body
Done = Callable[[Reply], None]


class HeartbeatLane:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._tasks: set[asyncio.Task[None]] = set()  # held until done (the loop keeps weak refs)

    def answer(
        self,
        group_id: str,
        session_id: str,
        authorization: bytes | None,
        source: Callable[[], str],
        body: bytes,
        done: Done,
    ) -> None:
        """Authorize and answer one heartbeat; ``done`` gets the reply, now or later, once."""
        auth = self.node.auth
        try:
            who = auth.check_now("POST", HEARTBEAT, authorization)
        except Exception as exc:  # check_now decides no refusal; anything here is a bug
            done(_unexpected(exc))
            return
        if who is NOT_NOW:  # a first check, or a refusal: decided (and counted) by check()

            async def checked() -> Reply:
                try:
                    await auth.check("POST", HEARTBEAT, authorization, source())
                except CfsError as exc:
                    return error_reply(exc, refusal_headers(exc))
                return await self.reply_authorized(group_id, session_id, body)

            self._run(checked(), done)
            return
        self.answer_authorized(group_id, session_id, body, done)

    def answer_authorized(self, group_id: str, session_id: str, body: bytes, done: Done) -> None:
        """Answer one heartbeat whose caller holds the role already."""
        try:
            outcome = self.node.heartbeat_now(_report(group_id, session_id, body))
        except CfsError as exc:
            done(error_reply(exc))
            return
        except Exception as exc:
            done(_unexpected(exc))
            return
        if isinstance(outcome, HeartbeatAnswer):
            done(_ok(outcome))
        elif isinstance(outcome, asyncio.Future):
            outcome.add_done_callback(lambda future: done(_reply_of(future)))
        else:
            self._run(_awaited(outcome), done)

    async def reply_authorized(self, group_id: str, session_id: str, body: bytes) -> Reply:
        """``answer_authorized`` for a caller that awaits the reply."""
        reply: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self.answer_authorized(group_id, session_id, body, reply.set_result)
        return await reply

    def _run(self, reply: Coroutine[Any, Any, Reply], done: Done) -> None:
        async def run() -> None:
            try:
                result = await reply
            except CfsError as exc:
                result = error_reply(exc)
            except Exception as exc:
                result = _unexpected(exc)
            done(result)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def error_reply(exc: CfsError, extra: list[tuple[bytes, bytes]] | None = None) -> Reply:
    status, headers, body = error_response_parts(exc)
    return status, headers + (extra or []), body


def _report(group_id: str, session_id: str, body: bytes) -> HeartbeatReport:
    parsed = HeartbeatBody.parse(load_json(body))
    return HeartbeatReport(
        check_id(group_id, "groupId"),
        check_id(session_id, "sessionId"),
        parsed.score,
        parsed.last_data_processed,
        parsed.heartbeat_time,
        parsed.held_role,
        parsed.held_epoch,
    )


def _ok(answer: HeartbeatAnswer) -> Reply:
    return 200, JSON_HEADERS, heartbeat_payload(answer)


async def _awaited(pending: Awaitable[HeartbeatAnswer]) -> Reply:
    return _ok(await pending)


def _reply_of(future: asyncio.Future[HeartbeatAnswer]) -> Reply:
    if future.cancelled():  # the relay closed (shutdown): the adapter retries elsewhere
        return error_reply(Unavailable("The heartbeat could not be relayed.", retry_after=0.5))
    exc = future.exception()
    if exc is None:
        return _ok(future.result())
    if isinstance(exc, CfsError):
        return error_reply(exc)
    return _unexpected(exc)


def _unexpected(exc: BaseException) -> Reply:
    log.error("Unexpected error answering a heartbeat", exc_info=exc)
    return error_reply(CfsError(f"Internal error: {type(exc).__name__}"))
