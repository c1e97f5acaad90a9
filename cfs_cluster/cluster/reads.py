"""Consistent reads: any node answers a read as the cluster does at that moment.

A read is linearizable by default. It waits until this node has applied at least the leader's
commit index as of the moment the read arrived, confirmed by the leader in its current term
(ReadIndex, replication.py):

- on the leader: a probe round confirms the commit index, then the leader waits for its own
  applied index to reach it (normally at once);
- on a follower: one call to the leader's ``/_cluster/read`` returns that index together with the
  leader's live liveness of the groups being read (heartbeats are not replicated, so only the
  deciding leader knows them), then the follower waits until it has applied the index.

Rounds are batched: at most one is in flight per node, and reads arriving meanwhile share the
next one, so a burst of reads costs one round trip. ``?stale=true`` skips all of this and answers
from the local replica at once, with headers that say how far behind it may be.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cfs_cluster import engine
from cfs_cluster.cluster.liveness import Coordinator, GroupLiveness
from cfs_cluster.cluster.relay import READ_PATH, Relay
from cfs_cluster.cluster.replication import Replicator
from cfs_cluster.errors import BadRequest, Unavailable

__all__ = ["Coalescer", "ReadView", "Reads", "decode_view", "encode_view", "parse_stale"]

T = TypeVar("T")
Liveness = dict[str, GroupLiveness]


class Coalescer(Generic[T]):
    """Runs at most one round at a time; callers that arrive during a round wait for the next
    one (the round in flight may have started before they arrived), and share it."""

    def __init__(self, run: Callable[[frozenset[str]], Awaitable[T]]) -> None:
        self._run = run
        self._waiting: list[asyncio.Future[T]] = []
        self._keys: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0  # for tests and metrics

    async def get(self, keys: Collection[str] = ()) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._keys.update(keys)
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                waiters, keys = self._waiting, frozenset(self._keys)
                self._waiting, self._keys = [], set()
                self.rounds += 1
                try:
                    result = await self._run(keys)
                except Exception as exc:  # every waiter must be answered, whatever failed
                    for future in waiters:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for future in waiters:
                    if not future.done():
                        future.set_result(result)
        finally:
            self._task = None


@dataclass(frozen=True)
class ReadView:
    """What a read may be answered from: the local state once ``index`` is applied here, plus
    the leader's live liveness of the groups asked for (None: only the checkpoint is known)."""

    index: int
    liveness: Liveness | None
    stale: bool
    last_contact_ms: int | None  # since the leader was last heard (0 on the leader itself)

    def group(self, group_id: str) -> GroupLiveness | None:
        return None if self.liveness is None else self.liveness.get(group_id)

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = [(b"x-cfs-applied-index", str(self.index).encode())]
        if self.stale:
            contact = "" if self.last_contact_ms is None else str(self.last_contact_ms)
            headers.append((b"x-cfs-last-contact", contact.encode()))
        return headers


class Reads:
    def __init__(
        self,
        replicator: Replicator,
        coordinator: Coordinator,
        relay: Relay,
        timeout: float,
        probe_timeout: float,
    ) -> None:
        self._replicator = replicator
        self._coordinator = coordinator
        self._relay = relay
        self._timeout = timeout
        self._probe_timeout = probe_timeout
        self.leader_rounds: Coalescer[int] = Coalescer(self._confirm)
        self.follower_rounds: Coalescer[dict[str, Any]] = Coalescer(self._ask_leader)

    async def barrier(self) -> None:
        """Return once this node has applied everything committed before the call."""
        await self.consistent(())

    async def consistent(self, groups: Collection[str]) -> ReadView:
        """A linearizable view, with the leader's live liveness of ``groups``."""
        deadline = time.monotonic() + self._timeout
        try:
            return await self._consistent_once(groups, deadline)
        except Unavailable:
            # A leader change in the middle of the round (a transfer, say): one more try
            # against whoever leads now, within the same deadline.
            await self._relay.await_new_leader()
            return await self._consistent_once(groups, deadline)

    def stale(self, groups: Collection[str]) -> ReadView:
        """The local replica as it is; on the leader its liveness is live anyway."""
        leading = self._replicator.is_leader()
        contact = self._replicator.leader_contact_age()
        return ReadView(
            index=self._replicator.applied_index(),
            liveness=self._coordinator.liveness(groups) if leading else None,
            stale=True,
            last_contact_ms=0 if leading else None if contact is None else round(contact * 1000),
        )

    async def for_follower(self, groups: Collection[str]) -> dict[str, Any]:
        """The leader's answer to a follower's ``/_cluster/read``."""
        if not self._replicator.is_leader():
            raise Unavailable("This node is not the leader.", retry_after=0.5)
        index = await self.leader_rounds.get()
        liveness = self._coordinator.liveness(groups)
        if liveness is None:
            raise Unavailable("This leader has not opened its term yet.", retry_after=0.5)
        return encode_view(index, liveness)

    async def _consistent_once(self, groups: Collection[str], deadline: float) -> ReadView:
        remaining = max(0.01, deadline - time.monotonic())
        if self._replicator.is_leader():
            if not self._replicator.has_lease():
                raise Unavailable("This leader has no current majority.", retry_after=0.5)
            index = await self.leader_rounds.get()
            await self._replicator.wait_applied(index, max(0.01, deadline - time.monotonic()))
            liveness = self._coordinator.liveness(groups)
            if liveness is None:
                raise Unavailable("This leader has not opened its term yet.", retry_after=0.5)
            return ReadView(index, liveness, stale=False, last_contact_ms=0)
        if not self._replicator.leader_connected():
            raise Unavailable("This node has no connection to a Raft leader.", retry_after=0.5)
        answer = await asyncio.wait_for(self.follower_rounds.get(groups), remaining)
        index, liveness = decode_view(answer)
        await self._replicator.wait_applied(index, max(0.01, deadline - time.monotonic()))
        return ReadView(index, liveness, stale=False, last_contact_ms=None)

    async def _confirm(self, _groups: frozenset[str]) -> int:
        """One confirmed commit index. If the probe round is not answered in time (voters of
        an older version ignore probes), a no-op entry committed in this term does the same
        job at the cost of a Raft write."""
        try:
            return await self._replicator.read_index(self._probe_timeout)
        except Unavailable:
            if not self._replicator.has_lease():
                raise
        await self._replicator.submit(_no_op(), self._timeout)
        return self._replicator.applied_index()

    async def _ask_leader(self, groups: frozenset[str]) -> dict[str, Any]:
        answer = await self._relay.call_leader(READ_PATH, {"Groups": sorted(groups)})
        if not isinstance(answer, dict):
            raise Unavailable("The leader's read answer is malformed.", retry_after=0.5)
        return answer


def _no_op() -> engine.OpenTerm:
    """An entry every version applies and that changes nothing: an OpenTerm of term 0 (the
    opened term only grows), with a fresh request id (OpenTerm ids are not remembered)."""
    return engine.OpenTerm(request_id=f"read-barrier:{uuid.uuid4().hex}", term=0)


# --------------------------------------------------------------------------- wire


def encode_view(index: int, liveness: Liveness) -> dict[str, Any]:
    return {
        "Index": index,
        "Groups": {
            group_id: {
                "LastDataProcessed": live.last_data_processed,
                "Heartbeats": {
                    sid: [r.score, r.last_data_processed, r.heartbeat_time, r.received_at]
                    for sid, r in live.heartbeats.items()
                },
            }
            for group_id, live in liveness.items()
        },
    }


def decode_view(answer: dict[str, Any]) -> tuple[int, Liveness]:
    try:
        index = int(answer["Index"])
        liveness = {
            str(group_id): GroupLiveness(
                int(live["LastDataProcessed"]),
                {
                    str(sid): engine.HeartbeatRecord(float(s), int(ldpt), int(hb), int(recv))
                    for sid, (s, ldpt, hb, recv) in live["Heartbeats"].items()
                },
            )
            for group_id, live in answer["Groups"].items()
        }
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise Unavailable(f"The leader's read answer is malformed: {exc}", retry_after=0.5) from exc
    return index, liveness


def parse_stale(query_string: bytes) -> bool:
    """``stale`` as Consul spells it: present (``?stale``, ``=true``, ``=1``) or ``false``/``0``;
    any other value is a 400. Every other query parameter is left to the route."""
    for pair in query_string.split(b"&"):
        name, _, value = pair.partition(b"=")
        if name.lower() != b"stale":
            continue
        text = value.decode("latin-1").strip().lower()
        if text in ("", "true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise BadRequest("stale must be true or false.", parameters={"stale": text[:16]})
    return False
