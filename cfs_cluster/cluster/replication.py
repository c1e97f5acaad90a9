"""The Raft adapter: the one module that runs pysyncobj (ops/backup.py only reads its dump format).

Engine commands go in, engine results come out. pysyncobj runs its own tick thread; applies and
callbacks happen there, and results are handed to the asyncio loop with
``call_soon_threadsafe``. Readers on the loop take ``read()``, which holds the same lock that
applies hold, so a multi-step read never sees half an apply.

Linearizable reads use a ReadIndex round (Raft thesis §6.4), which pysyncobj lacks: the leader
notes its commit index, sends every voter a ``cfs_read_index`` probe over the Raft transport,
and the index is confirmed once a majority answered that they still follow it in the same
term. A probe a voter answers was sent after the read arrived, so no other leader can have
committed anything the noted index misses. ``wait_applied`` then holds the read until this node
has applied that index.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pysyncobj import SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.config import FAIL_REASON

from cfs_cluster import engine
from cfs_cluster.cluster.lease import LeaderContact, LeaseTracker
from cfs_cluster.cluster.prevote import PreVotingSyncObj
from cfs_cluster.cluster.writebatch import WriteBatcher
from cfs_cluster.errors import Conflict, StorageUnavailable, Unavailable
from cfs_cluster.settings import RaftSettings
from cfs_cluster.storage.durable import STORAGE_REFUSED
from cfs_cluster.storage.journal import open_storage

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
        if type(command) is engine.Batch:  # the hooks see each command, as if unbatched
            for each, outcome in zip(command.commands, result.items, strict=False):
                self._applied(each, outcome)
        else:
            self._applied(command, result)
        return result

    def _applied(self, command: engine.Command, result: engine.Result) -> None:
        try:
            self.on_applied(command, result)
        except Exception:  # a hook must never wedge the tick thread
            log.exception("apply hook failed")

    def _deserialize(self, data: dict[str, Any]) -> None:
        with self.lock:
            super()._deserialize(data)


_PROBE = "cfs_read_index"  # leader -> voters; voters of older versions ignore it
_PROBE_ACK = "cfs_read_index_ack"
_PROBE_MEMORY = 10.0  # seconds an unanswered probe round is kept (its callers timed out)


@dataclass
class _Probe:
    """One ReadIndex round on the leader (tick thread only)."""

    term: int
    commit: int
    needed: int
    started: float
    waiters: list[Callable[[int | None], None]]
    acks: set[str] = field(default_factory=set)

    def finish(self, index: int | None) -> None:
        for waiter in self.waiters:
            waiter(index)


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
        fsync: bool = True,
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
        # ReadIndex rounds and applied-index waiters, shared with the tick thread.
        self._tick_lock = threading.Lock()
        self._probe_requests: list[Callable[[int | None], None]] = []
        self._probes: dict[int, _Probe] = {}
        self._probe_seq = 0
        self._applied_waiters: list[tuple[int, Callable[[], None]]] = []
        self._writes = WriteBatcher(self._store, self.voters_apply_batches)
        # Opened (and verified: StorageCorrupt) here, so a damaged journal stops the node
        # before it serves anything.
        self._storage = open_storage(data_dir, fsync=fsync)

    def start(self) -> None:
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
        self._obj = PreVotingSyncObj(
            self._self_address, list(self._peers), conf, [self._store], self._storage
        )
        self._observe_messages(self._obj)
        self._obj.addOnTickCallback(self._on_tick)

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
            kind = message.get("type") if isinstance(message, dict) else None
            if kind == _PROBE:
                self._answer_probe(obj, node, message)
                return
            if kind == _PROBE_ACK:
                self._count_probe_ack(obj, node, message)
                return
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
            if err == STORAGE_REFUSED:
                raise StorageUnavailable(self._refusal_reason(), retry_after=1)
            if err not in retryable or time.monotonic() + delay >= deadline:
                raise Unavailable(
                    f"The cluster did not commit the request ({_fail_name(err)}).", retry_after=1
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    def _refusal_reason(self) -> str:
        problem = self._storage.problem
        if problem is not None and self.is_leader():
            return f"This node leads but {problem}; writes resume once it can write again."
        return "The leader cannot write its journal (disk full or I/O error)."

    async def _submit_once(self, command: engine.Command, deadline: float) -> engine.Result | int:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Any, int]] = loop.create_future()

        def resolve(result: Any, err: int) -> None:
            if not future.done():
                future.set_result((result, err))

        def callback(result: Any, err: int) -> None:
            loop.call_soon_threadsafe(resolve, result, err)

        self._writes.submit(command, callback)
        try:
            result, err = await asyncio.wait_for(future, max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            return int(FAIL_REASON.UNKNOWN_OUTCOME)
        if err == FAIL_REASON.SUCCESS and isinstance(result, engine.Result):
            return result
        return int(err) if err != FAIL_REASON.SUCCESS else int(FAIL_REASON.UNKNOWN_OUTCOME)

    # ----------------------------------------------------------------- batching

    def voters_apply_batches(self) -> bool:
        """Every Raft voter (this node included) published that it applies ``Batch``: a
        member of an earlier release would not, and must never be sent one."""
        try:
            voters = {self._self_address, *self.other_addresses()}
        except RuntimeError:  # pysyncobj's tick thread changed the voter set meanwhile
            return False
        with self._store.lock:
            able = {
                m.raft
                for m in self._store.state.members.values()
                if engine.BATCH_FEATURE in m.features
            }
        return voters <= able

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

    # ----------------------------------------------------------------- read index

    def applied_index(self) -> int:
        return 0 if self._obj is None else int(self._obj.raftLastApplied)

    async def read_index(self, timeout: float) -> int:
        """This leader's commit index, confirmed by a majority in its current term after the
        call (one probe round; callers batch, see reads.py). Unavailable if this node does not
        lead with an opened term, or the round is not confirmed within ``timeout``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int | None] = loop.create_future()

        def resolve(index: int | None) -> None:
            if not future.done():
                future.set_result(index)

        def done(index: int | None) -> None:  # tick thread
            loop.call_soon_threadsafe(resolve, index)

        with self._tick_lock:
            self._probe_requests.append(done)
        self._wake_tick()
        try:
            index = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            index = None
        if index is None:
            raise Unavailable(
                "This node could not confirm its leadership with a majority.", retry_after=0.5
            )
        return index

    async def wait_applied(self, index: int, timeout: float) -> None:
        """Return once this node has applied ``index``; Unavailable after ``timeout``."""
        if self.applied_index() >= index:
            return
        loop = asyncio.get_running_loop()
        event = asyncio.Event()

        def reached() -> None:  # tick thread
            loop.call_soon_threadsafe(event.set)

        with self._tick_lock:
            self._applied_waiters.append((index, reached))
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            raise Unavailable(
                f"This node has not caught up with the leader (applied {self.applied_index()} "
                f"of {index}).",
                retry_after=0.5,
            ) from None

    def _wake_tick(self) -> None:
        """Have the tick thread run now instead of at the end of its poll (<= tick_period)."""
        notifier = getattr(self._obj, "_SyncObj__pipeNotifier", None)
        if notifier is not None:
            notifier.notify()

    def _on_tick(self) -> None:
        """Tick thread, after each round of applies: start probe rounds, release waiters."""
        obj = self._obj
        if obj is None:
            return
        try:
            self._tick_reads(obj)
        except Exception:  # the tick thread must survive (e.g. a loop closed at shutdown)
            log.exception("read-index tick failed")

    def _tick_reads(self, obj: SyncObj) -> None:
        with self._tick_lock:
            requests, self._probe_requests = self._probe_requests, []
            applied = obj.raftLastApplied
            ready = [w for w in self._applied_waiters if w[0] <= applied]
            if ready:
                self._applied_waiters = [w for w in self._applied_waiters if w[0] > applied]
        for _, reached in ready:
            reached()
        self._expire_probes(obj)
        if requests:
            self._start_probe(obj, requests)

    def _start_probe(self, obj: SyncObj, waiters: list[Callable[[int | None], None]]) -> None:
        term = int(obj.raftCurrentTerm)
        # The commit index counts only once this term has an entry committed (Raft §6.4).
        if not obj._isLeader() or self._store.state.opened_term != term:
            for waiter in waiters:
                waiter(None)
            return
        voters = obj.otherNodes
        self._probe_seq += 1
        probe = _Probe(
            term=term,
            commit=int(obj.raftCommitIndex),
            needed=(len(voters) + 1) // 2,  # answers besides our own for a majority
            started=time.monotonic(),
            waiters=waiters,
        )
        if probe.needed == 0:
            probe.finish(probe.commit)
            return
        self._probes[self._probe_seq] = probe
        transport = obj._SyncObj__transport
        message = {"type": _PROBE, "term": term, "seq": self._probe_seq}
        for node in voters:
            transport.send(node, message)

    def _answer_probe(self, obj: SyncObj, node: Any, message: dict[str, Any]) -> None:
        """A follower confirms it still follows ``node`` in the probe's term."""
        if message.get("term") == obj.raftCurrentTerm and obj._getLeader() == node:
            ack = {"type": _PROBE_ACK, "term": message.get("term"), "seq": message.get("seq")}
            obj._SyncObj__transport.send(node, ack)

    def _count_probe_ack(self, obj: SyncObj, node: Any, message: dict[str, Any]) -> None:
        seq = message.get("seq")
        if not isinstance(seq, int):
            return
        probe = self._probes.get(seq)
        if probe is None or message.get("term") != probe.term:
            return
        if not obj._isLeader() or obj.raftCurrentTerm != probe.term:
            return
        probe.acks.add(str(node.id))
        if len(probe.acks) >= probe.needed:
            del self._probes[seq]
            probe.finish(probe.commit)

    def _expire_probes(self, obj: SyncObj) -> None:
        """Fail rounds of a lost term, and forget rounds nobody waits for any more."""
        leading_term = int(obj.raftCurrentTerm) if obj._isLeader() else None
        now = time.monotonic()
        for seq, probe in list(self._probes.items()):
            if probe.term != leading_term or now - probe.started > _PROBE_MEMORY:
                del self._probes[seq]
                probe.finish(None)

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

    def storage_problem(self) -> str | None:
        """Why this node cannot write its journal now (disk full, I/O error), or None."""
        return self._storage.problem

    def raw_status(self) -> dict[str, Any]:
        if self._obj is None:
            return {}
        status = dict(self._obj.getStatus())
        status["storage_writable"] = self._storage.problem is None
        status["journal_syncs"] = self._storage.journal.syncs
        status["storage_refusals"] = self._storage.condition.refusals
        return status

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

    def leader_contact_age(self) -> float | None:
        """Seconds since a leader's last append_entries arrived here; None if never."""
        return self._contact.age()

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
