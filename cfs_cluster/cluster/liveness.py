"""Leader-local liveness: heartbeats in memory, role decisions through Raft.

Heartbeats are not Raft writes (design.md): the leader keeps, per session, when it last heard
it (monotonic clock) and what it reported. Only *decisions* go through the log, and a decision
is committed before any adapter is told about it. A periodic checkpoint replicates scores and
data times so a new leader starts from recent values, and a new leader gives every session a
fresh grace (FailoverTimeout + ``new_leader_grace``) before it may call anyone stale, which
covers the time a deposed leader may still have been renewing grants (P1, P2).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass
from typing import Any

from cfs_cluster import engine
from cfs_cluster.cluster.checkpoint import CheckpointBuffer, Key
from cfs_cluster.cluster.replication import Replicator
from cfs_cluster.cluster.schedule import SweepSchedule
from cfs_cluster.errors import CfsError, NotFound, Unavailable
from cfs_cluster.protocol.heartbeat import HeartbeatAnswer, HeartbeatReport
from cfs_cluster.protocol.wire import TICKS_PER_SECOND, ClientRole, RoleOverride, ticks_from_unix
from cfs_cluster.settings import FailoverSettings, RaftSettings

__all__ = ["Coordinator", "GroupLiveness", "HeartbeatAnswer", "HeartbeatReport"]

log = logging.getLogger("cfs.failover")

MAX_DECISION_ROUNDS = 4
UNKNOWN_PRIMARY_SCORE = 100.0  # the highest FailoverScore: ties keep the incumbent


@dataclass
class _Steady:
    """A group whose last full evaluation decided nothing, in a shape where only a heartbeat
    that changes something, or time, can make a decision due (``Coordinator._is_steady``)."""

    group: engine.Group  # the object evaluated: a group deleted and created again is another
    version: int
    live: tuple[str, ...]  # the sessions live at that evaluation
    until: float  # this clock: the first instant one of them could turn stale


@dataclass(frozen=True)
class GroupLiveness:
    """What the deciding leader knows of a group now, beyond the replicated state: the
    primary's last data time and each heard session's last heartbeat."""

    last_data_processed: int  # UTC ticks, 0 = none heard in this term
    heartbeats: dict[str, engine.HeartbeatRecord]


class Coordinator:
    """Decides roles on the leader; on every node, wakes watchers when a group changes."""

    def __init__(
        self,
        replicator: Replicator,
        failover: FailoverSettings,
        raft: RaftSettings,
        request_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._replicator = replicator
        self._failover = failover
        self._request_timeout = request_timeout
        # A deposed leader answers roles for at most leader_fallback after its last majority
        # contact; an election takes at least min_timeout after that contact. Waiting
        # leader_fallback + max_timeout more than usual covers it with room to spare.
        self.new_leader_grace = raft.leader_fallback + raft.max_timeout
        self._clock = clock
        self._wall = wall
        self._heard: dict[Key, float] = {}
        # Per group and session: when (this clock) the last Primary answer the session may have
        # received was composed. A Secondary answer since does not end it: it may be lost.
        self._granted: dict[str, dict[str, float]] = {}
        # Per session: the epoch up to which its latest heartbeat says it acts on no grant.
        self._acks: dict[Key, int] = {}
        # Groups whose last decision has an unknown outcome (it may still commit, even in the
        # next term): no answers for them until their version moves on (the decision applied,
        # or something else did and the decision can no longer apply).
        self._unsure: dict[str, int] = {}
        self._term = 0  # the term this node leads in, once its OpenTerm is applied
        self._scores: dict[Key, float] = {}
        self._checkpoint = CheckpointBuffer()
        self._steady: dict[str, _Steady] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._sweeps = SweepSchedule()
        self._watchers: dict[str, asyncio.Event] = {}
        self._listeners: list[Callable[[str], None]] = []
        self._raft_leader = False  # pysyncobj says this node leads
        self._leading = False  # ... and this term's OpenTerm entry is applied here
        self._opening: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks = [
            asyncio.create_task(self._sweep_loop(), name="cfs-sweep"),
            asyncio.create_task(self._checkpoint_loop(), name="cfs-checkpoint"),
        ]

    async def stop(self) -> None:
        if self._opening is not None:
            self._tasks.append(self._opening)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._leading:
            await self._flush_checkpoint()

    def on_applied(self, command: engine.Command, result: engine.Result) -> None:
        """Called on pysyncobj's tick thread after every apply."""
        group_id = getattr(command, "group_id", None)
        if self._loop is not None and group_id is not None:
            self._loop.call_soon_threadsafe(self._group_changed, group_id)

    def on_raft_state(self, old: str, new: str) -> None:
        """Called on the tick thread when this node's Raft role changes."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._raft_state_changed, new)

    def _raft_state_changed(self, new: str) -> None:
        raft_leader = new == "leader"
        if raft_leader == self._raft_leader:
            return
        self._raft_leader = raft_leader
        self._leading = False
        self._reset()
        if self._opening is not None:
            self._opening.cancel()
            self._opening = None
        if raft_leader:
            self._opening = asyncio.create_task(self._open_term(), name="cfs-open-term")
        else:
            log.info("This node is no longer the Raft leader.")

    async def _open_term(self) -> None:
        """Decide nothing until this term's first entry is applied here.

        Until then the local state may lack entries the previous leader committed (after a
        full restart, all of them): groups would be answered 404 and seeded without their
        sessions. Committing an entry of our own term is how a Raft leader learns the rest.
        """
        while self._raft_leader:
            term = self._replicator.term()
            command = engine.OpenTerm(request_id=f"term:{term}:{uuid.uuid4().hex}", term=term)
            try:
                await self._replicator.submit(command, self._request_timeout)
            except CfsError as exc:
                log.debug("Opening term %d failed (%s); retrying", term, exc)
                await asyncio.sleep(0.05)
                continue
            if (
                self._raft_leader
                and self._replicator.is_leader()
                and term == self._replicator.term()
            ):
                self._leading = True
                self._term = term
                self._seed_from_checkpoint()
                log.info(
                    "This node is now the Raft leader (term %d); every session gets a fresh grace.",
                    term,
                )
            return

    def _reset(self) -> None:
        self._heard.clear()
        self._granted.clear()
        self._acks.clear()
        self._unsure.clear()
        self._scores.clear()
        self._checkpoint.clear()
        self._steady.clear()
        self._sweeps.clear()

    def _seed_from_checkpoint(self) -> None:
        now, wall_now = self._clock(), ticks_from_unix(self._wall())
        grace_until = now + self.new_leader_grace
        with self._replicator.read() as state:
            for group in state.groups.values():
                self._checkpoint.seed_group_time(group.id, group.last_data_processed)
                # An earlier leader may have answered these Primary until it stepped down
                # (within new_leader_grace): count that answer as given when the grace ends.
                for holder in (group.primary, group.releasing):
                    if holder is not None:
                        self._granted_at(group.id, holder, grace_until)
                # A live session's checkpointed record is refreshed once per FailoverTimeout
                # (checkpoint.checkpoint_due), so it may be that much older than its last heartbeat.
                horizon = 2 * group.timeout + round(
                    (self._failover.checkpoint_interval + self.new_leader_grace) * TICKS_PER_SECOND
                )
                for session in group.sessions.values():
                    key = (group.id, session.id)
                    record = session.heartbeat
                    if record is None:
                        if session.id == group.primary:
                            # Granted before the first checkpoint: its grant may still be
                            # valid, and its score is unknown, so it keeps the role until it
                            # reports (a score of 0 would hand the role away at once: P1/P2).
                            self._scores[key] = UNKNOWN_PRIMARY_SCORE
                            self._heard[key] = grace_until
                        continue
                    self._scores[key] = record.score
                    self._checkpoint.seed(key, record)
                    recent = wall_now - record.received_at <= horizon
                    if recent or session.id == group.primary:
                        self._heard[key] = grace_until
                self._schedule(group.id, now)

    # ----------------------------------------------------------------- heartbeats

    def can_decide(self) -> bool:
        return self._leading and self._replicator.has_lease()

    async def heartbeat(self, report: HeartbeatReport) -> HeartbeatAnswer:
        """Record one heartbeat and answer the session's role. Leader only."""
        outcome = self.heartbeat_now(report)
        if isinstance(outcome, HeartbeatAnswer):
            return outcome
        return await outcome

    def heartbeat_now(
        self, report: HeartbeatReport
    ) -> HeartbeatAnswer | Coroutine[Any, Any, HeartbeatAnswer]:
        """Record one heartbeat: its answer at once when the steady-state fast path gives it (no
        decision due, nothing to wait for), else the coroutine that decides and answers. A
        relayed batch thus answers most of its items without a task each. Leader only."""
        if not self.can_decide():
            raise Unavailable(
                "This node is not the leader with a current majority.", retry_after=0.5
            )
        group = self._replicator.state.groups.get(report.group_id)
        if group is None:
            raise NotFound(f"Failover group '{report.group_id}' was not found.")
        if report.session_id not in group.sessions:
            raise NotFound(
                f"Client session '{report.session_id}' was not found in group '{report.group_id}'."
            )
        now = self._clock()
        key = (report.group_id, report.session_id)
        heard_before = self._heard.get(key)
        # Nothing a decision depends on changes when a live session reports the same score.
        unchanged = (
            heard_before is not None
            and now - heard_before <= group.timeout_seconds
            and self._scores.get(key) == report.score
        )
        self._heard[key] = now if heard_before is None else max(now, heard_before)
        self._record(key, report, group)
        self._note_held(key, report)
        if report.group_id not in self._sweeps:
            self._schedule(report.group_id, now + group.timeout_seconds)
        lock = self._locks.get(report.group_id)
        if (
            unchanged
            and (lock is None or not lock.locked())
            and self._is_steady(group, report.session_id)
        ):
            self._require_sure(group)
            return self._answer(group, report)
        # Until that coroutine has evaluated, no other heartbeat of the group (a later item
        # of the same relayed batch) may be answered from what the group was before this one.
        self._steady.pop(report.group_id, None)
        return self._decide_and_answer(report, unchanged)

    async def _decide_and_answer(self, report: HeartbeatReport, unchanged: bool) -> HeartbeatAnswer:
        group = await self._decide(report.group_id, report.session_id, unchanged)
        self._require_sure(group)
        return self._answer(group, report)

    def _note_held(self, key: Key, report: HeartbeatReport) -> None:
        """Remember what the session says it holds (our agent; AVEVA adapters say nothing)."""
        held, epoch = report.held_role, report.held_epoch
        if held is not None and held != ClientRole.Primary and epoch is not None:
            self._acks[key] = epoch
        else:
            self._acks.pop(key, None)

    def _require_sure(self, group: engine.Group) -> None:
        if self._unsure.get(group.id) == group.version:
            raise Unavailable(
                "A role decision of this group has an unknown outcome; retry shortly.",
                retry_after=0.5,
            )
        self._unsure.pop(group.id, None)

    def _granted_at(self, group_id: str, session_id: str, when: float) -> None:
        held = self._granted.setdefault(group_id, {})
        held[session_id] = max(when, held.get(session_id, when))

    def _record(self, key: Key, report: HeartbeatReport, group: engine.Group) -> None:
        wall_now = ticks_from_unix(self._wall())
        self._scores[key] = report.score
        previous = self._checkpoint.record(key)
        ldpt = report.last_data_processed
        if ldpt is None:
            ldpt = previous.last_data_processed if previous else 0
        record = engine.HeartbeatRecord(
            score=report.score,
            last_data_processed=ldpt,
            heartbeat_time=report.heartbeat_time or wall_now,
            received_at=wall_now,
        )
        self._checkpoint.note(key, record, group.sessions[key[1]].heartbeat, group.timeout)

    def _answer(self, group: engine.Group, report: HeartbeatReport) -> HeartbeatAnswer:
        role = engine.role_of(group, report.session_id)
        if role == ClientRole.Primary and report.last_data_processed:
            # The group keeps the primary's last reported time (spec §4.2).
            self._checkpoint.advance_group_time(
                group.id, report.last_data_processed, group.last_data_processed
            )
        ldpt = max(self._checkpoint.group_time(group.id, 0), group.last_data_processed)
        valid_for = 0
        if role == ClientRole.Primary:
            valid_for = int(group.timeout * self._failover.validity_fraction)
            # ValidFor runs on the adapter's clock from its send, before now (evaluate adds
            # the full T and the margin to this).
            self._granted_at(group.id, report.session_id, self._clock())
        return HeartbeatAnswer(role, ldpt, group.epoch, valid_for, group.timeout)

    def liveness(self, group_ids: Collection[str]) -> dict[str, GroupLiveness] | None:
        """The live liveness of the groups that exist, as this leader knows it now; None
        unless this node decides (a follower, or a leader whose term is not open yet)."""
        if not self._leading:
            return None
        groups = self._replicator.state.groups
        result = {}
        for group_id in group_ids:
            group = groups.get(group_id)
            if group is None:
                continue
            heard = {
                sid: record
                for sid in group.sessions
                if (record := self._checkpoint.record((group_id, sid))) is not None
            }
            result[group_id] = GroupLiveness(self._checkpoint.group_time(group_id, 0), heard)
        return result

    # ----------------------------------------------------------------- decisions

    def _view(
        self, group: engine.Group, heartbeat_from: str | None, sender_was_pending: bool = False
    ) -> engine.LivenessView:
        now = self._clock()
        ages: dict[str, float] = {}
        scores: dict[str, float] = {}
        acks: dict[str, int] = {}
        for sid in group.sessions:
            key = (group.id, sid)
            heard = self._heard.get(key)
            if heard is not None:
                ages[sid] = now - heard
            score = self._scores.get(key)
            if score is not None:
                scores[sid] = score
            ack = self._acks.get(key)
            if ack is not None:
                acks[sid] = ack
        granted = {sid: now - when for sid, when in self._granted.get(group.id, {}).items()}
        return engine.LivenessView(
            ages=ages,
            scores=scores,
            now=ticks_from_unix(self._wall()),
            margin=self._failover.expiry_margin,
            heartbeat_from=heartbeat_from,
            sender_was_pending=sender_was_pending,
            granted=granted,
            acks=acks,
            term=self._term,
        )

    async def _decide(
        self, group_id: str, heartbeat_from: str | None, unchanged: bool = False
    ) -> engine.Group:
        """Commit whatever decisions the group needs now; return the group afterwards.

        ``unchanged``: the heartbeat of ``heartbeat_from`` that led here changed nothing a
        decision depends on (a live session, the same score)."""
        group = self._group(group_id)
        was_pending = heartbeat_from is not None and group.pending == heartbeat_from
        lock = self._locks.setdefault(group_id, asyncio.Lock())
        # The hot path: nothing to change, nothing to replicate. Never while a decision is in
        # flight: that decision may release the very grant this answer would renew.
        if not lock.locked():
            if unchanged and self._is_steady(group, heartbeat_from):
                return group
            if engine.evaluate(group, self._view(group, heartbeat_from, was_pending)) is None:
                self._note_steady(group)
                return group
        self._steady.pop(group_id, None)
        async with lock:
            for _ in range(MAX_DECISION_ROUNDS):
                group = self._group(group_id)
                decision = engine.evaluate(group, self._view(group, heartbeat_from, was_pending))
                if decision is None:
                    self._note_steady(group)
                    break
                if not self.can_decide():
                    raise Unavailable("Lost leadership while deciding.", retry_after=0.5)
                before = (group.primary, group.pending)
                try:
                    result = await self._replicator.submit(decision, self._request_timeout)
                except Unavailable:
                    self._unsure[group_id] = group.version
                    raise
                if result.code == engine.Code.OK:
                    _log_decision(before, decision)
        return self._group(group_id)

    def _is_steady(self, group: engine.Group, sender: str | None) -> bool:
        """True when ``evaluate`` would decide nothing for this heartbeat, without running it.

        The last full evaluation of this group, at this version, decided nothing while it had a
        live primary and no candidate, releasing session or override (``_note_steady``). What
        ``evaluate`` reads has not changed since in any way that counts: the sender was live and
        reports its old score (the caller's ``unchanged``); any other session's new score or
        return to life came with its own heartbeat, which ran the full evaluation; grant ages
        matter only when the role must move; no live session can have turned stale before
        ``until``. The sender's acknowledgement matters only when it is the primary (a regrant).
        """
        steady = self._steady.get(group.id)
        if steady is None or steady.group is not group or steady.version != group.version:
            return False
        if self._clock() >= steady.until and not self._still_live(group, steady):
            return False
        if sender is not None and sender == group.primary:
            return self._acks.get((group.id, sender), -1) < group.epoch
        return True

    def _still_live(self, group: engine.Group, steady: _Steady) -> bool:
        """Whether every session live at the evaluation still is (heartbeats since moved
        ``until`` on); if so, ``until`` is moved to the new first instant one could turn stale."""
        now, timeout = self._clock(), group.timeout_seconds
        until = None
        for sid in steady.live:
            heard = self._heard.get((group.id, sid))
            if heard is None or now - heard > timeout:
                return False
            until = heard + timeout if until is None else min(until, heard + timeout)
        if until is None:
            return False
        steady.until = until
        return True

    def _note_steady(self, group: engine.Group) -> None:
        """Remember that the full evaluation of ``group`` just decided nothing, when the group is
        in the steady shape ``_is_steady`` relies on; forget it otherwise."""
        self._steady.pop(group.id, None)
        if group.primary is None or group.pending is not None or group.releasing is not None:
            return
        now, timeout = self._clock(), group.timeout_seconds
        live = []
        for sid, session in group.sessions.items():
            if session.override != RoleOverride.Off:
                return
            heard = self._heard.get((group.id, sid))
            if heard is not None and now - heard <= timeout:
                live.append(sid)
            elif sid == group.primary:
                return  # a stale primary: its grant lapsing is a decision due in time
        steady = _Steady(group, group.version, tuple(live), now)
        if self._still_live(group, steady):
            self._steady[group.id] = steady

    def _group(self, group_id: str) -> engine.Group:
        group = self._replicator.state.groups.get(group_id)
        if group is None:
            raise NotFound(f"Failover group '{group_id}' was not found.")
        return group

    # ----------------------------------------------------------------- sweep

    def _schedule(self, group_id: str, when: float) -> None:
        self._sweeps.schedule(group_id, when)

    def _group_changed(self, group_id: str) -> None:
        event = self._watchers.pop(group_id, None)
        if event is not None:
            event.set()
        for listener in self._listeners:
            listener(group_id)
        if self._leading:
            self._schedule(group_id, self._clock())

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self._failover.sweep_period)
            if not self.can_decide():
                continue
            for group_id in self._sweeps.due(self._clock()):
                await self._sweep_group(group_id)

    async def _sweep_group(self, group_id: str) -> None:
        try:
            group = await self._decide(group_id, None)
        except NotFound:
            self._locks.pop(group_id, None)
            return
        except Unavailable:
            self._schedule(group_id, self._clock() + 0.5)
            return
        next_check = self._next_check(group)
        if next_check is not None:
            self._schedule(group_id, next_check)

    def _next_check(self, group: engine.Group) -> float | None:
        """The next instant something could change in the group without a heartbeat."""
        timeout, margin = group.timeout_seconds, self._failover.expiry_margin
        times = []
        for sid, session in group.sessions.items():
            heard = self._heard.get((group.id, sid))
            if heard is not None:
                extra = margin if sid == group.primary else 0.0
                times.append(heard + timeout + extra + 0.001)
            if session.override_expiry is not None:
                wait = (session.override_expiry - ticks_from_unix(self._wall())) / TICKS_PER_SECOND
                times.append(self._clock() + max(wait, 0.0))
        now = self._clock()
        held = self._granted.get(group.id, {})
        for sid, when in list(held.items()):
            if now - when > timeout + margin:
                del held[sid]  # certainly lapsed: nothing left to wait for
            else:
                times.append(when + timeout + margin + 0.001)
        pending = [t for t in times if t > now]
        return min(pending) if pending else (now + timeout if times else None)

    # ----------------------------------------------------------------- checkpoints

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self._failover.checkpoint_interval)
            if self.can_decide():
                try:
                    await self._flush_checkpoint()
                except Unavailable as exc:
                    log.warning("Checkpoint not replicated: %s", exc.reason)

    async def _flush_checkpoint(self) -> None:
        taken = self._checkpoint.take()
        if taken is None:
            return
        records, times = taken
        command = engine.SaveCheckpoint(
            request_id=f"checkpoint:{time.time_ns()}",
            heartbeats=records,
            group_times=times,
            term=self._term,
        )
        await self._replicator.submit(command, self._request_timeout)

    # ----------------------------------------------------------------- watchers

    def subscribe(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call ``listener(group_id)`` on the event loop after every applied entry that touches
        a group, whichever group (the dashboard's change stream); returns the unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def wait_for_change(self, group_id: str, timeout: float) -> bool:
        """Wait until the group's replicated state changes here; False on timeout."""
        event = self._watchers.get(group_id)
        if event is None:
            event = self._watchers[group_id] = asyncio.Event()
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True


def _log_decision(before: tuple[str | None, str | None], decision: engine.Decide) -> None:
    """Every role decision at Information, in the commercial service's words (spec §7)."""
    old_primary, old_pending = before
    if decision.primary is not None and decision.primary != old_primary:
        log.info("Client '%s' promoted to Primary. Reason: %s.", decision.primary, decision.reason)
    if old_primary is not None and decision.primary != old_primary:
        log.info("Client '%s' demoted to Secondary. Reason: %s.", old_primary, decision.reason)
    if decision.pending is not None and decision.pending != old_pending:
        log.info("Client '%s' is PendingPrimary. Reason: %s.", decision.pending, decision.reason)
