"""Follower -> leader relay for leader-only work (heartbeats).

Heartbeats arriving at a follower are coalesced for ``linger`` seconds into one batch and
posted to the leader's internal endpoint over a kept-alive connection. A batch that hits a
leader change is retried once against the new leader; heartbeats are idempotent (they only
refresh liveness), so a retry is safe.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from typing import Any

import httpx

from cfs_cluster.cluster.replication import Replicator
from cfs_cluster.errors import CfsError, NotFound, TooManyRequests, Unavailable
from cfs_cluster.protocol.heartbeat import (
    RELAY_PATH,
    HeartbeatAnswer,
    HeartbeatReport,
    parse_held,
)
from cfs_cluster.protocol.wire import ClientRole
from cfs_cluster.security.tls import trust_context

__all__ = [
    "FORWARDED_HEADER",
    "RELAY_HEADER",
    "RELAY_PATH",
    "TERM_HEADER",
    "Relay",
    "relay_token",
    "relayed_term_is_current",
]

log = logging.getLogger("cfs.forwarding")

RELAY_HEADER = "x-cfs-relay"
# The Raft term the relaying follower is in: a leader of an older term (deposed, not yet aware)
# refuses the batch, so a relayed heartbeat is answered only by the leader of the current term.
TERM_HEADER = "x-cfs-term"
MAX_BATCH = 512
MAX_IN_FLIGHT = 4  # relay batches outstanding at once (each on its own kept-alive connection)
_ERRORS: dict[int, type[CfsError]] = {404: NotFound, 429: TooManyRequests}


def relay_token(raft_password: str | None) -> str:
    """The shared secret followers present to the leader's internal endpoint."""
    key = (raft_password or "cfs-dev-cluster").encode()
    return hmac.new(key, b"cfs-relay-v1", hashlib.sha256).hexdigest()


def encode_report(r: HeartbeatReport) -> list[Any]:
    held = None if r.held_role is None else int(r.held_role)
    return [r.group_id, r.session_id, r.score, r.last_data_processed, r.heartbeat_time, held,
            r.held_epoch]  # fmt: skip


def decode_report(item: list[Any]) -> HeartbeatReport:
    """Five items from a node of an earlier release, seven (with HeldRole/HeldEpoch) now."""
    group_id, session_id, score, ldpt, hb_time, *rest = item
    held_role, held_epoch = parse_held(*rest) if len(rest) == 2 else (None, None)
    return HeartbeatReport(
        str(group_id), str(session_id), float(score), ldpt, hb_time, held_role, held_epoch
    )


def encode_answer(a: HeartbeatAnswer) -> list[Any]:
    return [int(a.role), a.last_data_processed, a.epoch, a.valid_for, a.timeout]


def decode_answer(item: list[Any]) -> HeartbeatAnswer:
    role, ldpt, epoch, valid_for, timeout = item
    return HeartbeatAnswer(ClientRole(role), int(ldpt), int(epoch), int(valid_for), int(timeout))


FORWARDED_HEADER = "X-CFS-Forwarded"


def relayed_term_is_current(header: str | None, own_term: int) -> bool:
    """False when the relaying follower already follows a newer term than this node leads."""
    try:
        return header is None or int(header) <= own_term
    except ValueError:
        return False


class Relay:
    def __init__(self, replicator: Replicator, token: str, linger: float, timeout: float) -> None:
        self._replicator = replicator
        self._token = token
        self._linger = linger
        self._timeout = timeout
        self._queue: list[tuple[HeartbeatReport, asyncio.Future[HeartbeatAnswer]]] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._trusted: tuple[str, ...] = ()
        self._client = self._new_client()
        self._retired: list[httpx.AsyncClient] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self.relayed = 0

    async def close(self) -> None:
        for client in (*self._retired, self._client):
            await client.aclose()

    def _new_client(self) -> httpx.AsyncClient:
        # Members share a LAN: a connect that takes longer than a second will not succeed.
        return httpx.AsyncClient(
            timeout=httpx.Timeout(self._timeout, connect=min(1.0, self._timeout)),
            limits=httpx.Limits(max_keepalive_connections=8),
            verify=trust_context(self._trusted),
        )

    def _current_client(self) -> httpx.AsyncClient:
        """The client, rebuilt when the members' published certificates change, so a leader
        with a self-signed certificate is trusted (pinned) without a shared CA."""
        published = tuple(
            sorted(
                {m.certificate for m in self._replicator.state.members.values() if m.certificate}
            )
        )
        if published != self._trusted:
            self._trusted = published
            # Requests in flight keep the old client; it is closed with the relay.
            self._retired.append(self._client)
            self._client = self._new_client()
        return self._client

    async def heartbeat(self, report: HeartbeatReport) -> HeartbeatAnswer:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[HeartbeatAnswer] = loop.create_future()
        self._queue.append((report, future))
        if len(self._queue) >= MAX_BATCH and self._in_flight < MAX_IN_FLIGHT:
            self._flush()
        else:
            self._schedule_flush()
        return await future

    def _schedule_flush(self) -> None:
        """Send what is queued after ``linger`` (0 = once the current loop iteration's
        arrivals are in) unless MAX_IN_FLIGHT batches are out: then the next returning batch
        sends it. Under load, batches grow by themselves instead of waiting on a timer."""
        if self._flush_handle is None and self._queue and self._in_flight < MAX_IN_FLIGHT:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(self._linger, self._flush)

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        if batch:
            self._in_flight += 1
            task = asyncio.create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._in_flight -= 1
        self._schedule_flush()

    async def _send(
        self, batch: list[tuple[HeartbeatReport, asyncio.Future[HeartbeatAnswer]]]
    ) -> None:
        body = [encode_report(report) for report, _ in batch]
        try:
            try:
                results = await self._post(body)
            except Unavailable:
                await self._await_new_leader()
                results = await self._post(body)
        except CfsError as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.relayed += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if "ok" in result:
                future.set_result(decode_answer(result["ok"]))
            else:
                error_type = _ERRORS.get(int(result.get("status", 503)), Unavailable)
                future.set_exception(
                    error_type(str(result.get("reason", "relay failed")), retry_after=1)
                )

    async def _post(self, body: list[list[Any]]) -> list[dict[str, Any]]:
        url = self._leader_url()
        try:
            response = await self._current_client().post(
                url + RELAY_PATH,
                json=body,
                headers={RELAY_HEADER: self._token, TERM_HEADER: str(self._replicator.term())},
            )
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"Could not reach the leader at {url}: {exc}", retry_after=0.5
            ) from exc
        if response.status_code != 200:
            raise Unavailable(
                f"The leader answered {response.status_code} to a relay.", retry_after=0.5
            )
        results: list[dict[str, Any]] = response.json()
        if len(results) != len(body):
            raise Unavailable(
                "The leader's relay answer does not match the batch.", retry_after=0.5
            )
        return results

    async def forward(
        self,
        method: str,
        path: str,
        body: bytes,
        authorization: str | None,
        timeout: float = 30.0,
    ) -> httpx.Response:
        """Send an administrator's request on to the leader with the caller's own credentials
        (the leader authenticates it again), marked so the leader never forwards it further."""
        url = self._leader_url()
        headers = {FORWARDED_HEADER: "1", "content-type": "application/json"}
        if authorization:
            headers["authorization"] = authorization
        try:
            return await self._current_client().request(
                method, url + path, content=body, headers=headers, timeout=timeout
            )
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"Could not reach the leader at {url}: {exc}", retry_after=0.5
            ) from exc

    def _leader_url(self) -> str:
        leader = self._replicator.leader_address()
        if leader is None:
            raise Unavailable(
                "No Raft leader is known; an election may be in progress.", retry_after=0.5
            )
        if leader == self._replicator.self_address:
            raise Unavailable("This node leads but has no current majority.", retry_after=0.5)
        for member in self._replicator.state.members.values():
            if member.raft == leader:
                return member.api_url
        raise Unavailable(
            f"The leader {leader} has not published its API address yet.", retry_after=0.5
        )

    async def _await_new_leader(self) -> None:
        """Give an election a moment (bounded) before the one retry."""
        before = self._replicator.leader_address()
        for _ in range(20):
            await asyncio.sleep(0.05)
            now = self._replicator.leader_address()
            if now is not None and now != before:
                return
