"""Follower -> leader calls: the heartbeat relay, read confirmations, forwarded administrator
requests, probes.

Heartbeats arriving at a follower are coalesced for ``linger`` seconds into one batch and
posted to the leader's internal endpoint over a kept-alive connection of the member link
(memberlink.py; read confirmations too), not httpx. A batch that hits a
leader change is retried once against the new leader; heartbeats are idempotent (they only
refresh liveness), so a retry is safe.

Every request to the leader goes through ``Relay.request_leader``: signed with the member key
(memberauth.py), never with an end user's credentials, over HTTPS that trusts the members'
published certificates or the members' CA only (tls.py). Its outcome is kept, so ``/readyz``
of a follower that cannot reach its leader (a refused certificate, a refused signature, no
connection) answers 503 without a request of its own; an idle follower probes once a second.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cfs_cluster.cluster.memberlink import LinkError, MemberLink
from cfs_cluster.cluster.replication import Replicator
from cfs_cluster.engine import Member
from cfs_cluster.errors import BadRequest, CfsError, NotFound, TooManyRequests, Unavailable
from cfs_cluster.protocol.heartbeat import (
    INTERNAL_PATHS,
    PING_PATH,
    READ_PATH,
    RELAY_PATH,
    HeartbeatAnswer,
    HeartbeatReport,
)
from cfs_cluster.protocol.wire import ClientRole
from cfs_cluster.security.memberauth import MEMBER_HEADER, Caller, MemberAuth, is_internal
from cfs_cluster.security.tls import member_trust_context

__all__ = [
    "INTERNAL_PATHS",
    "PING_PATH",
    "READ_PATH",
    "RELAY_PATH",
    "Relay",
    "relayed_term_is_current",
]

log = logging.getLogger("cfs.forwarding")

MAX_BATCH = 512
MAX_IN_FLIGHT = 4  # relay batches outstanding at once (each on its own kept-alive connection)
PROBE_AFTER = 1.0  # seconds without news of the leader's reachability before probing it
_ERRORS: dict[int, type[CfsError]] = {400: BadRequest, 404: NotFound, 429: TooManyRequests}


def encode_report(r: HeartbeatReport) -> list[Any]:
    held = None if r.held_role is None else int(r.held_role)
    return [r.group_id, r.session_id, r.score, r.last_data_processed, r.heartbeat_time, held,
            r.held_epoch]  # fmt: skip


def encode_answer(a: HeartbeatAnswer) -> list[Any]:
    return [int(a.role), a.last_data_processed, a.epoch, a.valid_for, a.timeout]


def decode_answer(item: list[Any]) -> HeartbeatAnswer:
    role, ldpt, epoch, valid_for, timeout = item
    return HeartbeatAnswer(ClientRole(role), int(ldpt), int(epoch), int(valid_for), int(timeout))


@dataclass(frozen=True)
class _Outcome:
    """The last definite answer to "can this node reach its leader?"."""

    leader: str  # the leader's API URL it was about
    ok: bool
    reason: str
    at: float  # monotonic


def relayed_term_is_current(term: int | None, own_term: int) -> bool:
    """False when the relaying follower already follows a newer term than this node leads: a
    leader of an older term (deposed, not yet aware) must not answer, so a relayed heartbeat is
    answered only by the leader of the current term."""
    return term is None or term <= own_term


class Relay:
    def __init__(
        self,
        replicator: Replicator,
        member_auth: MemberAuth,
        linger: float,
        timeout: float,
        peer_ca: Path | None = None,
    ) -> None:
        self._replicator = replicator
        self._auth = member_auth
        self._linger = linger
        self._timeout = timeout
        self._peer_ca = peer_ca
        self._queue: list[tuple[HeartbeatReport, asyncio.Future[HeartbeatAnswer]]] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._trusted: tuple[str, ...] = ()
        self._client = self._new_client()
        self._retired: list[httpx.AsyncClient] = []
        self._trust = member_trust_context(self._trusted, self._peer_ca)
        self._links: dict[str, MemberLink] = {}  # by API URL: the kept-alive relay calls
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._outcome: _Outcome | None = None
        self._probing = False
        self.relayed = 0

    async def close(self) -> None:
        for link in self._links.values():
            link.close()
        for client in (*self._retired, self._client):
            await client.aclose()

    def _new_client(self) -> httpx.AsyncClient:
        # Members share a LAN: a connect that takes longer than a second will not succeed.
        return httpx.AsyncClient(
            timeout=httpx.Timeout(self._timeout, connect=min(1.0, self._timeout)),
            limits=httpx.Limits(max_keepalive_connections=8),
            verify=member_trust_context(self._trusted, self._peer_ca),
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
            self._trust = member_trust_context(self._trusted, self._peer_ca)
            for link in self._links.values():
                link.close()
            self._links.clear()
        return self._client

    async def heartbeat(self, report: HeartbeatReport) -> HeartbeatAnswer:
        return await self.enqueue(report)

    def enqueue(self, report: HeartbeatReport) -> asyncio.Future[HeartbeatAnswer]:
        """Queue ``report`` for the next batch; the future gets the leader's answer."""
        future: asyncio.Future[HeartbeatAnswer] = asyncio.get_running_loop().create_future()
        self._queue.append((report, future))
        if len(self._queue) >= MAX_BATCH and self._in_flight < MAX_IN_FLIGHT:
            self._flush()
        else:
            self._schedule_flush()
        return future

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
                await self.await_new_leader()
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
                reason = str(result.get("reason", "relay failed"))
                wait = result.get("retry_after")
                retry_after = float(wait) if isinstance(wait, int | float) else 1.0
                future.set_exception(error_type(reason, retry_after=retry_after))

    async def _post(self, body: list[list[Any]]) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = await self.call_leader(
            RELAY_PATH, {"Term": self._replicator.term(), "Heartbeats": body}
        )
        if not isinstance(results, list) or len(results) != len(body):
            raise Unavailable(
                "The leader's relay answer does not match the batch.", retry_after=0.5
            )
        return results

    async def call_leader(self, path: str, payload: Any) -> Any:
        """POST ``payload`` to the leader's internal endpoint ``path`` (under ``/_cluster/``)
        over the kept-alive member link; the decoded JSON answer of a 200, else Unavailable."""
        body = json.dumps(payload).encode()
        leader, headers = self._signed(leader=self._leader(), method="POST", path=path, body=body)
        link = self._link(leader.api_url)
        try:
            status, content = await link.post(path, body, headers, self._timeout)
        except LinkError as exc:
            if exc.connecting:
                self._note(leader.api_url, False, _connect_failure(exc.reason))
            raise Unavailable(
                f"Could not reach the leader at {leader.api_url}: {exc.reason}", retry_after=0.5
            ) from exc
        self._note_answer(leader.api_url, "POST", path, status)
        if status != 200:
            raise Unavailable(f"The leader answered {status} to {path}.", retry_after=0.5)
        try:
            return json.loads(content)
        except ValueError as exc:
            raise Unavailable(
                f"The leader's answer to {path} is not JSON.", retry_after=0.5
            ) from exc

    def _signed(
        self, leader: Member, method: str, path: str, body: bytes, caller: Caller | None = None
    ) -> tuple[Member, list[tuple[str, str]]]:
        try:
            signature = self._auth.sign(method, path, body, leader.node_id, caller)
        except Unavailable as exc:
            self._note(leader.api_url, False, exc.reason)
            raise
        return leader, [(MEMBER_HEADER, signature), ("content-type", "application/json")]

    def _note_answer(self, leader_url: str, method: str, path: str, status: int) -> None:
        if is_internal(path) and status not in (200, 503):
            # 401: the leader refused the signature; 404: it does not serve the internal
            # route (a release without it, mid-upgrade). 503 is an election, not the relay.
            self._note(leader_url, False, f"the leader answered {status} to {method} {path}")
        else:
            self._note(leader_url, True, "ready")

    def _link(self, api_url: str) -> MemberLink:
        self._current_client()  # rebuilds the trust (and drops the links) when it changed
        link = self._links.get(api_url)
        if link is None:
            link = MemberLink(api_url, self._trust, connect_timeout=min(1.0, self._timeout))
            self._links[api_url] = link
        return link

    async def request_leader(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        caller: Caller | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """The one way this node sends a request to another member: to the leader, signed
        for it with the member key (memberauth.py). ``caller`` is
        who a forwarded request speaks for (the leader checks that role, and never sees the
        caller's credentials). ``path`` is signed as given: a query must already be
        percent-encoded. Any answer is returned; no answer is Unavailable."""
        leader, signed = self._signed(self._leader(), method, path, body, caller)
        headers = dict(signed)
        try:
            response = await self._current_client().request(
                method,
                leader.api_url + path,
                content=body,
                headers=headers,
                timeout=self._timeout if timeout is None else timeout,
            )
        except httpx.HTTPError as exc:
            if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                self._note(leader.api_url, False, _connect_failure(str(exc) or type(exc).__name__))
            raise Unavailable(
                f"Could not reach the leader at {leader.api_url}: {exc}", retry_after=0.5
            ) from exc
        self._note_answer(leader.api_url, method, path, response.status_code)
        return response

    # ----------------------------------------------------------------- reachability

    def _note(self, leader: str, ok: bool, reason: str) -> None:
        before = self._outcome
        if before is not None and not before.ok and ok:
            log.info("The leader at %s is reachable again.", leader)
        elif not ok and (before is None or before.ok or before.reason != reason):
            log.warning("Cannot relay to the leader at %s: %s", leader, reason)
        self._outcome = _Outcome(leader, ok, reason, time.monotonic())

    def leader_reachable(self) -> tuple[bool, str]:
        """Whether the last definite outcome of a call to the current leader was a success;
        unknown (not called yet, or the leader changed) counts as not reachable."""
        try:
            leader = self._leader()
        except Unavailable as exc:
            return False, exc.reason
        outcome = self._outcome
        if outcome is None or outcome.leader != leader.api_url:
            return False, f"the relay to the leader at {leader.api_url} is not checked yet"
        if not outcome.ok:
            return False, f"cannot relay to the leader at {leader.api_url}: {outcome.reason}"
        return True, "ready"

    def probe_due(self) -> bool:
        """No call to the leader told anything for PROBE_AFTER seconds (or about this leader)."""
        if self._probing:
            return False
        outcome = self._outcome
        if outcome is None or time.monotonic() - outcome.at >= PROBE_AFTER:
            return True
        try:
            return self._leader().api_url != outcome.leader
        except Unavailable:
            return False

    async def probe(self) -> None:
        """One signed request to the leader's ping endpoint, for its outcome only."""
        self._probing = True
        try:
            await self.request_leader("GET", PING_PATH, timeout=min(1.0, self._timeout))
        except CfsError:
            pass  # noted by request_leader
        finally:
            self._probing = False

    def _leader(self) -> Member:
        leader = self._replicator.leader_address()
        if leader is None:
            raise Unavailable(
                "No Raft leader is known; an election may be in progress.", retry_after=0.5
            )
        if leader == self._replicator.self_address:
            raise Unavailable("This node leads but has no current majority.", retry_after=0.5)
        for member in self._replicator.state.members.values():
            if member.raft == leader:
                return member
        raise Unavailable(
            f"The leader {leader} has not published its API address yet.", retry_after=0.5
        )

    async def await_new_leader(self) -> None:
        """Give an election a moment (bounded) before the one retry."""
        before = self._replicator.leader_address()
        for _ in range(20):
            await asyncio.sleep(0.05)
            now = self._replicator.leader_address()
            if now is not None and now != before:
                return


def _connect_failure(text: str) -> str:
    if "CERTIFICATE" in text:
        return (
            f"{text} (the leader's certificate is not trusted: give every member the CA "
            "with --peer-ca-file, or let them publish and pin their own certificates)"
        )
    return text
