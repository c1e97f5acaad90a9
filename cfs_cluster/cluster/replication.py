"""The Raft adapter: the one module that runs pysyncobj (ops/backup.py only reads its dump format).

Engine commands go in, engine results come out. pysyncobj runs its own tick thread; applies and
callbacks happen there, and results are handed to the asyncio loop with
``call_soon_threadsafe``. Readers on the loop take ``read()``, which holds the same lock that
applies hold, so a multi-step read never sees half an apply.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pysyncobj import SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.config import FAIL_REASON

from cfs_cluster import engine
from cfs_cluster.cluster.lease import LeaderContact, LeaseTracker
from cfs_cluster.errors import Conflict, Unavailable
from cfs_cluster.settings import RaftSettings

__all__ = ["MemberStatus", "Replicator"]

log = logging.getLogger("cfs.replication")

AppliedHook = Callable[[engine.Command, engine.Result], None]
# Outcomes after which the command certainly did not apply, or may be retried safely because
# every command is idempotent (request ids, compare-and-set versions).
_RETRYABLE = {
    FAIL_REASON.QUEUE_FULL,
    FAIL_REASON.MISSING_LEADER,
    FAIL_REASON.DISCARDED,
    FAIL_REASON.NOT_LEADER,
    FAIL_REASON.LEADER_CHANGED,
    FAIL_REASON.UNKNOWN_OUTCOME,
}
# A command computed from leader-local liveness is not retried after an outcome that leaves
# leadership in doubt: a retry would be forwarded to the next leader and commit there (the
# term fence refuses it only after that leader's OpenTerm). Only a full queue is certain.
_RETRYABLE_FENCED = {FAIL_REASON.QUEUE_FULL}
_RAFT_STATES = {0: "follower", 1: "candidate", 2: "leader"}


class _Store(SyncObjConsumer):  # type: ignore[misc]
    """The replicated object. Only ``state`` is serialized into snapshots."""

    def __init__(self, on_applied: AppliedHook) -> None:
        # Set before SyncObjConsumer.__init__ so they are excluded from snapshots.
        self.lock = threading.RLock()
        self.on_applied = on_applied
        super().__init__()
        self.state = engine.ClusterState()

    @replicated  # type: ignore[untyped-decorator]
    def apply_command(self, command: engine.Command) -> engine.Result:
        with self.lock:
            result = engine.apply(self.state, command)
        try:
            self.on_applied(command, result)
        except Exception:  # a hook must never wedge the tick thread
            log.exception("apply hook failed")
        return result

    def _deserialize(self, data: dict[str, Any]) -> None:
        with self.lock:
            super()._deserialize(data)


@dataclass(frozen=True)
class MemberStatus:
    raft: str
    connected: bool
    match_index: int | None
    last_contact: float | None  # seconds ago


class Replicator:
    """Owns the SyncObj. Construct and ``start()`` on the main thread (pysyncobj rule)."""

    def __init__(
        self,
        self_address: str,
        peers: tuple[str, ...],
        data_dir: Path,
        timing: RaftSettings,
        password: str | None,
        on_applied: AppliedHook,
        on_state_changed: Callable[[str, str], None],
    ) -> None:
        self._self_address = self_address
        self._peers = peers
        self._data_dir = data_dir
        self._timing = timing
        self._password = password
        self._store = _Store(on_applied)
        self._on_state_changed = on_state_changed
        self._obj: SyncObj | None = None
        self._lease_cache: tuple[float, bool] = (0.0, False)
        self._lease = LeaseTracker()
        self._contact = LeaderContact()

    def start(self) -> None:
        self._data_dir.mkdir(parents=True, exist_ok=True)
        t = self._timing
        conf = SyncObjConf(
            password=self._password,
            autoTickPeriod=t.tick_period,
            raftMinTimeout=t.min_timeout,
            raftMaxTimeout=t.max_timeout,
            appendEntriesPeriod=t.append_entries_period,
            leaderFallbackTimeout=t.leader_fallback,
            connectionTimeout=t.connection_timeout,
            connectionRetryTime=t.connection_retry,
            appendEntriesUseBatch=False,
            commandsWaitLeader=False,
            dynamicMembershipChange=True,
            journalFile=str(self._data_dir / "raft.journal"),
            fullDumpFile=str(self._data_dir / "raft.dump"),
            logCompactionMinEntries=t.compaction_min_entries,
            logCompactionMinTime=t.compaction_min_time,
            useFork=False,
            bindAddress=self._self_address,
            onStateChanged=self._state_changed,
        )
        self._obj = SyncObj(self._self_address, list(self._peers), conf, consumers=[self._store])
        self._observe_messages(self._obj)

    def _observe_messages(self, obj: SyncObj) -> None:
        """Stamp and read pysyncobj's messages for the lease and the leader contact (lease.py).

        A follower whose leader went silent must refuse relays at once: its TCP connection to
        the leader may look alive for seconds after a partition (dropped packets reset
        nothing), and relays sent into it would hang until they time out.
        """
        transport = obj._SyncObj__transport
        deliver = transport._onMessageReceivedCallback
        send = transport.send

        def observed(node: Any, message: Any) -> None:
            term = int(obj.raftCurrentTerm)
            self._contact.observe(node, message, term)
            self._lease.observe(node, message, term)
            try:
                deliver(node, message)
            finally:
                self._lease.delivered(node)

        def stamped(node: Any, message: Any) -> Any:
            self._lease.stamp(node, message)
            return send(node, message)

        transport.setOnMessageReceivedCallback(observed)
        transport.send = stamped

    def _state_changed(self, old: int, new: int) -> None:
        if _RAFT_STATES.get(new) == "leader":
            self._lease.reset()  # confirmations count only in the term this node now leads
        self._on_state_changed(_RAFT_STATES.get(old, "?"), _RAFT_STATES.get(new, "?"))

    @property
    def obj(self) -> SyncObj:
        if self._obj is None:
            raise Unavailable("Replication is not started.", retry_after=1)
        return self._obj

    # ----------------------------------------------------------------- writes

    async def submit(self, command: engine.Command, timeout: float) -> engine.Result:
        """Replicate ``command`` and return its result once applied here; retry while safe."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        retryable = _RETRYABLE_FENCED if isinstance(command, engine.TERM_FENCED) else _RETRYABLE
        while True:
            err = await self._submit_once(command, deadline)
            if isinstance(err, engine.Result):
                return err
            if err not in retryable or time.monotonic() + delay >= deadline:
                raise Unavailable(
                    f"The cluster did not commit the request ({_fail_name(err)}).", retry_after=1
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def _submit_once(self, command: engine.Command, deadline: float) -> engine.Result | int:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Any, int]] = loop.create_future()

        def resolve(result: Any, err: int) -> None:
            if not future.done():
                future.set_result((result, err))

        def callback(result: Any, err: int) -> None:
            loop.call_soon_threadsafe(resolve, result, err)

        self._store.apply_command(command, callback=callback)
        try:
            result, err = await asyncio.wait_for(future, max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            return int(FAIL_REASON.UNKNOWN_OUTCOME)
        if err == FAIL_REASON.SUCCESS and isinstance(result, engine.Result):
            return result
        return int(err) if err != FAIL_REASON.SUCCESS else int(FAIL_REASON.UNKNOWN_OUTCOME)

    # ----------------------------------------------------------------- reads

    @contextmanager
    def read(self) -> Iterator[engine.ClusterState]:
        with self._store.lock:
            yield self._store.state

    @property
    def state(self) -> engine.ClusterState:
        """The state object for single-step lock-free reads (one dict lookup)."""
        state: engine.ClusterState = self._store.state
        return state

    # ----------------------------------------------------------------- status

    @property
    def self_address(self) -> str:
        return self._self_address

    def is_leader(self) -> bool:
        return self._obj is not None and bool(self._obj._isLeader())

    def term(self) -> int:
        return 0 if self._obj is None else int(self._obj.raftCurrentTerm)

    def leader_address(self) -> str | None:
        if self._obj is None:
            return None
        leader = self._obj._getLeader()
        return None if leader is None else str(getattr(leader, "id", leader))

    def has_lease(self) -> bool:
        """True when this node leads and a majority confirmed, in this term, a message this
        node sent within ``leader_fallback`` (lease.py: our own stamps, one clock).

        pysyncobj steps a cut-off leader down only on its next tick; this check is exact at the
        instant of the call, so a role is never answered on the strength of an old majority.
        """
        now = time.monotonic()
        checked_at, value = self._lease_cache
        if now - checked_at < 0.005:
            return value
        value = self._compute_lease()
        self._lease_cache = (now, value)
        return value

    def _compute_lease(self) -> bool:
        obj = self._obj
        if obj is None or not obj._isLeader():
            return False
        others = obj.otherNodes
        fresh = self._lease.confirmed(others, self._timing.leader_fallback)
        return (fresh + 1) * 2 > len(others) + 1

    def raw_status(self) -> dict[str, Any]:
        if self._obj is None:
            return {}
        return dict(self._obj.getStatus())

    def members(self) -> list[MemberStatus]:
        obj = self._obj
        if obj is None:
            return []
        now = time.monotonic()
        responses: dict[Any, float] = getattr(obj, "_SyncObj__lastResponseTime", {})
        matches: dict[Any, int] = getattr(obj, "_SyncObj__raftMatchIndex", {})
        leading = obj._isLeader()
        result = []
        for node in sorted(obj.otherNodes, key=lambda n: str(n.id)):
            contact = responses.get(node)
            result.append(
                MemberStatus(
                    raft=str(node.id),
                    connected=bool(obj.isNodeConnected(node)),
                    match_index=matches.get(node) if leading else None,
                    last_contact=(now - contact) if (leading and contact) else None,
                )
            )
        return result

    def other_addresses(self) -> list[str]:
        return [] if self._obj is None else sorted(str(n.id) for n in self._obj.otherNodes)

    def transfer_leadership(self, to: str | None = None) -> None:
        """Ask pysyncobj once to hand leadership to ``to`` (or the most caught-up follower)."""
        if self._obj is not None and self._obj._isLeader():
            self._obj.transferLeadership(to)

    async def hand_over_leadership(self, to: str | None, within: float) -> str | None:
        """Hand leadership over and wait for it to move; the new leader's address, or None
        if it did not move (to ``to``, when given) within ``within`` seconds.

        pysyncobj silently denies a transfer while the target's match index trails the log
        (it does under load, or just after the target restarted): ask again every 0.2 s.
        """
        deadline = time.monotonic() + within
        attempt = 0
        while time.monotonic() < deadline:
            if attempt % 10 == 0:
                self.transfer_leadership(to)
            attempt += 1
            await asyncio.sleep(0.02)
            leader = self.leader_address()
            if leader is not None and leader != self._self_address and to in (None, leader):
                return leader
        return None

    def leader_connected(self) -> bool:
        """A follower heard the leader of its current term within ``min_timeout`` (cheap:
        checked per request). An append_entries of a deposed leader, which pysyncobj ignores,
        does not count."""
        obj = self._obj
        leader = None if obj is None else obj._getLeader()
        if obj is None or leader is None:
            return False
        return self._contact.heard_within(
            leader, int(obj.raftCurrentTerm), self._timing.min_timeout
        )

    def voters(self) -> list[str]:
        """Raft addresses of every voting member, this node included, as pysyncobj sees it."""
        return sorted([self._self_address, *self.other_addresses()])

    async def change_membership(self, add: bool, address: str, timeout: float) -> None:
        """Add or remove one voter through the Raft log (single-server change; pysyncobj
        refuses a second change until the first is applied). Returns once committed."""
        obj = self.obj
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()

        def resolve(err: int) -> None:
            if not future.done():
                future.set_result(err)

        def callback(_result: Any, err: int) -> None:
            loop.call_soon_threadsafe(resolve, int(err))

        if add:
            obj.addNodeToCluster(address, callback=callback)
        else:
            obj.removeNodeFromCluster(address, callback=callback)
        try:
            err = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise Unavailable(
                "The membership change was not confirmed in time; check GET /api/v1/cluster "
                "before retrying.",
                retry_after=1,
            ) from None
        if err == FAIL_REASON.REQUEST_DENIED:
            raise Conflict(
                "The cluster refused the membership change: another change is still in "
                "progress, or the leader has not yet committed an entry of its term."
            )
        if err != FAIL_REASON.SUCCESS:
            raise Unavailable(
                f"The membership change did not commit ({_fail_name(err)}).", retry_after=1
            )

    def destroy(self) -> None:
        if self._obj is not None:
            self._obj.destroy_synchronous()
            self._obj = None


def _fail_name(err: int) -> str:
    for name, value in vars(FAIL_REASON).items():
        if value == err and name.isupper():
            return str(name)
    return str(err)
