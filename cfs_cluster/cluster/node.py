"""One cluster node: replication + liveness + relay, with explicit start and stop phases."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Coroutine
from typing import Any

from cfs_cluster import engine
from cfs_cluster.cluster.clock import WallClock
from cfs_cluster.cluster.liveness import Coordinator
from cfs_cluster.cluster.membership import Membership
from cfs_cluster.cluster.reads import Reads
from cfs_cluster.cluster.relay import Relay
from cfs_cluster.cluster.replication import Replicator
from cfs_cluster.engine import configuration as config
from cfs_cluster.errors import CfsError, Conflict, NotFound, Unavailable
from cfs_cluster.ops.logs import LEVELS, set_level
from cfs_cluster.ops.metrics import Metrics, MetricsSource
from cfs_cluster.ops.omf import HealthEgress, HealthSource
from cfs_cluster.protocol.heartbeat import HeartbeatAnswer, HeartbeatReport
from cfs_cluster.security import tls
from cfs_cluster.security.auth import Authenticator
from cfs_cluster.security.memberauth import OVERLAP, MemberAuth, new_member_key
from cfs_cluster.security.passwords import hash_password
from cfs_cluster.security.ratelimit import HeartbeatLimiter
from cfs_cluster.security.tls import certificate_status
from cfs_cluster.settings import Settings

__all__ = ["Node"]

# What this release can apply beyond every release's commands, published with the member.
FEATURES = (engine.BATCH_FEATURE,)

log = logging.getLogger("cfs.node")


class Node:
    """The services the API calls. Construct anywhere; ``start()`` on the main thread's loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started_at = time.time()
        self.coordinator: Coordinator
        self.replicator = Replicator(
            self_address=settings.raft_address,
            peers=settings.peers,
            data_dir=settings.data_dir,
            timing=settings.raft,
            password=settings.raft_password,
            on_applied=self._on_applied,
            on_state_changed=self._on_raft_state,
            fsync=not settings.unsafe_no_fsync,
        )
        # The wall clock every UTC stamp of this node comes from (cluster/clock.py).
        self.wall = WallClock(settings.test_clock_file)
        self.coordinator = Coordinator(
            self.replicator,
            settings.failover,
            settings.raft,
            settings.request_timeout,
            wall=self.wall,
        )
        self.membership = Membership(self.replicator, settings.raft, settings.request_timeout)
        self.member_auth = MemberAuth(lambda: self.replicator.state.member_keys, settings.node_id)
        self.relay = Relay(
            self.replicator,
            self.member_auth,
            settings.failover.relay_linger,
            settings.request_timeout,
            settings.security.peer_ca_file,
        )
        # A probe round a majority cannot answer within an election timeout falls back to a
        # no-op write (reads.py): those voters are as good as gone, or of an older version.
        self.reads = Reads(
            self.replicator,
            self.coordinator,
            self.relay,
            settings.request_timeout,
            probe_timeout=settings.raft.min_timeout,
        )
        self._member_key_task: asyncio.Task[None] | None = None
        self._publish_task: asyncio.Task[None] | None = None
        self.auth = Authenticator(self.users, settings.security, clients=self.clients)
        self.auth.recheck = self.reads.barrier  # unknown credentials may be replication lag
        self.heartbeat_limiter = HeartbeatLimiter(
            settings.failover.heartbeat_rate_limit, settings.security.heartbeat_burst
        )
        self._bootstrap_task: asyncio.Task[None] | None = None
        self.metrics = Metrics(
            MetricsSource(self.replicator.raw_status, self.replicator.read, self._ready_only)
        )
        self.health = HealthEgress(
            HealthSource(
                settings.node_id,
                settings.cluster_name,
                lambda: config.current(self.replicator.state).health_endpoints,
                self._counts,
                self.replicator.is_leader,
                self._ready_only,
            ),
            settings.health_interval,
            self.metrics,
            self.started_at,
            settings.data_dir,
        )
        self._log_level: str | None = None
        self.draining = False  # set on SIGTERM when a drain period is configured (server.py)
        # Set when the node starts to drain or stop: held long-polls answer 503 at once, so
        # agents move to another node instead of holding up the shutdown.
        self.stopping = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._background: set[asyncio.Future[None]] = set()
        self._watch_task: asyncio.Task[None] | None = None

    def users(self) -> dict[str, engine.User]:
        # getattr: a snapshot written before users existed unpickles without the field.
        users: dict[str, engine.User] = self.replicator.state.users
        return users

    def clients(self) -> dict[str, engine.OAuthClient]:
        return self.replicator.state.clients

    def _on_applied(self, command: engine.Command, result: engine.Result) -> None:
        self.coordinator.on_applied(command, result)
        self.metrics.observe_applied(command, self.replicator.state)
        if isinstance(command, engine.SetConfiguration):
            self._follow_log_level()

    def _follow_log_level(self) -> None:
        """Apply the replicated LogLevel here (from the apply hook, and the watcher after a
        snapshot load). The change is logged at Information whichever way it goes."""
        level = config.current(self.replicator.state).log_level
        if level is None or level == self._log_level:
            return
        self._log_level = level
        quieter = LEVELS[level.lower()] > logging.getLogger().getEffectiveLevel()
        if quieter:
            log.info("Log level changed to %s (replicated configuration).", level)
        set_level(level)
        if not quieter:
            log.info("Log level changed to %s (replicated configuration).", level)

    async def _watch(self) -> None:
        """Cheap periodic checks that have no event of their own: leader identity, log level,
        and (on a follower) whether the leader answers this node's relays."""
        while True:
            self.metrics.observe_leader(self.replicator.leader_address())
            self._follow_log_level()
            if self._follows() and self.relay.probe_due():
                self._spawn(self.relay.probe())
            await asyncio.sleep(0.25)

    def _follows(self) -> bool:
        leader = self.replicator.leader_address()
        return leader is not None and leader != self.replicator.self_address

    def release_waiters(self) -> None:
        """Wake every held long-poll (safe from a signal handler: it goes through the loop)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.stopping.set)

    def begin_drain(self, seconds: float) -> None:
        """Called from the signal handler: stop looking ready, give leadership away now."""
        self.draining = True
        self.release_waiters()
        log.info("Draining for %.1f s before stopping: /readyz now answers 503.", seconds)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(
                self._spawn, self._give_up_leadership(max(1.0, seconds))
            )

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _give_up_leadership(self, within: float) -> None:
        if self.replicator.is_leader():
            await self.replicator.hand_over_leadership(None, within)

    def tls_status(self) -> dict[str, Any]:
        return certificate_status(self.settings)

    def _ready_only(self) -> bool:
        return self.is_ready()[0]

    def _counts(self) -> tuple[int, int]:
        with self.replicator.read() as state:
            return len(state.groups), sum(len(g.sessions) for g in state.groups.values())

    def _on_raft_state(self, old: str, new: str) -> None:
        log.info("Raft state of %s: %s -> %s", self.settings.node_id, old, new)
        self.coordinator.on_raft_state(old, new)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.coordinator.start()
        self.replicator.start()
        self._publish_task = asyncio.create_task(self._publish_member())
        self._watch_task = asyncio.create_task(self._watch())
        self.health.start()
        if self.settings.security.bootstrap_admin:
            self._bootstrap_task = asyncio.create_task(self._bootstrap_admin())
        elif self.settings.security.auth == "required" and not self.users():
            log.warning(
                "Authentication is required and this node has no users yet: it answers 401 "
                "until users arrive through Raft from its peers (CFS_BOOTSTRAP_ADMIN creates "
                "the first administrator of a new cluster)."
            )
        self._member_key_task = asyncio.create_task(self._issue_member_key())

    async def stop(self) -> None:
        """Hand leadership over first, so a planned stop costs no election timeout."""
        if self._publish_task is not None:
            self._publish_task.cancel()
        if self._bootstrap_task is not None:
            self._bootstrap_task.cancel()
        if self._watch_task is not None:
            self._watch_task.cancel()
        if self._member_key_task is not None:
            self._member_key_task.cancel()
        await self.health.stop()
        leading = self.replicator.is_leader()
        await self.coordinator.stop()
        if leading:
            await self._give_up_leadership(1.0)
        await self.relay.close()
        self.replicator.destroy()

    async def _publish_member(self) -> None:
        """Publish this node's API URL in the replicated member table (for relays and /cluster)."""
        s = self.settings
        certificate = await asyncio.to_thread(tls.published_certificate, s)
        command = engine.RegisterMember(
            request_id=f"member:{s.node_id}:{s.raft_address}:{s.api_url}:{uuid.uuid4().hex}",
            node_id=s.node_id,
            raft=s.raft_address,
            api_url=s.api_url,
            certificate=certificate,
            features=FEATURES,
        )
        wanted = engine.Member(s.node_id, s.raft_address, s.api_url, certificate, FEATURES)
        while True:
            if self.replicator.state.members.get(s.node_id) == wanted:
                return
            try:
                await self.replicator.submit(command, 2.0)
            except CfsError:
                await asyncio.sleep(0.2)

    async def _bootstrap_admin(self) -> None:
        """Create the first administrator once: whichever node leads first submits it.

        ``if_no_users`` and a fixed request id make it idempotent on every node and restart.
        """
        name, _, password = (self.settings.security.bootstrap_admin or "").partition(":")
        password_hash = await asyncio.to_thread(hash_password, password)
        command = engine.AddUser(
            request_id=f"bootstrap-admin:{name}",
            name=name,
            role=engine.ADMINISTRATORS,
            password_hash=password_hash,
            if_no_users=True,
        )
        while not self.users():
            if self.replicator.is_leader():
                try:
                    await self.replicator.submit(command, 2.0)
                    log.info("Bootstrap administrator '%s' applied", name)
                    return
                except CfsError:
                    pass
            await asyncio.sleep(0.2)

    async def _issue_member_key(self) -> None:
        """The first member key, issued once by whichever node leads first (``only_if_none``:
        a second issue, after a leader change, changes nothing)."""
        while not self.member_auth.has_key():
            if self.replicator.is_leader():
                try:
                    await self.replicator.submit(self._member_key_command(only_if_none=True), 2.0)
                    continue
                except CfsError:
                    pass
            await asyncio.sleep(0.2)

    async def rotate_member_key(self) -> engine.SigningKey:
        """A new member key signs from now on; the previous one verifies for OVERLAP seconds."""
        command = self._member_key_command(only_if_none=False)
        await self.submit(command)
        log.info("Member key rotated: %s signs from now on.", command.kid)
        return self.replicator.state.member_keys[-1]

    def _member_key_command(self, only_if_none: bool) -> engine.RotateMemberKey:
        kid, secret = new_member_key()
        return engine.RotateMemberKey(
            request_id=f"member-key:{kid}",
            kid=kid,
            secret=secret,
            time=int(time.time()),
            retain=OVERLAP,
            only_if_none=only_if_none,
        )

    # ----------------------------------------------------------------- services

    async def submit(self, command: engine.Command) -> engine.Result:
        result = await self.replicator.submit(command, self.settings.request_timeout)
        if result.code == engine.Code.GROUP_NOT_FOUND:
            raise NotFound(f"Failover group '{getattr(command, 'group_id', '')}' was not found.")
        if result.code == engine.Code.SESSION_NOT_FOUND:
            raise NotFound(f"Client session '{getattr(command, 'session_id', '')}' was not found.")
        if result.code == engine.Code.CONFLICT:
            raise Conflict(result.detail)
        if result.code == engine.Code.INVALID:
            log.error("Command %s was refused by the state machine: %s", command, result.detail)
            raise Unavailable("The request could not be applied.", retry_after=1)
        return result

    async def heartbeat(self, report: HeartbeatReport) -> HeartbeatAnswer:
        outcome = self.heartbeat_now(report)
        return outcome if isinstance(outcome, HeartbeatAnswer) else await outcome

    def heartbeat_now(
        self, report: HeartbeatReport
    ) -> HeartbeatAnswer | Awaitable[HeartbeatAnswer]:
        """One heartbeat: its answer at once when the leader's steady-state fast path gives it;
        else what to await for it — the relay's future on a follower (no task per heartbeat),
        a coroutine when the leader must decide. Errors raise here or from the awaitable."""
        started = time.perf_counter()
        local = self.coordinator.can_decide()
        try:
            outcome = self._answer_heartbeat(report, local)
        except CfsError as exc:
            self.metrics.heartbeat_errors.labels(str(exc.status)).inc()
            raise
        path = "local" if local else "relayed"
        if isinstance(outcome, HeartbeatAnswer):
            self.metrics.observe_heartbeat(path, started)
            return outcome
        if isinstance(outcome, asyncio.Future):
            outcome.add_done_callback(lambda done: self._observe(done, path, started))
            return outcome
        return self._observed(outcome, path, started)

    def _answer_heartbeat(
        self, report: HeartbeatReport, local: bool
    ) -> HeartbeatAnswer | Awaitable[HeartbeatAnswer]:
        self._limit(report)
        if local:
            return self.coordinator.heartbeat_now(report)
        if not self.replicator.leader_connected():
            # Cut off from the leader (or no leader): say so now, so the adapter moves on to
            # another node at once instead of waiting for a relay that cannot connect.
            raise Unavailable("This node has no connection to a Raft leader.", retry_after=0.5)
        return self.relay.enqueue(report)

    def _observe(self, done: asyncio.Future[HeartbeatAnswer], path: str, started: float) -> None:
        if done.cancelled():
            return
        exc = done.exception()
        if isinstance(exc, CfsError):
            self.metrics.heartbeat_errors.labels(str(exc.status)).inc()
        elif exc is None:
            self.metrics.observe_heartbeat(path, started)

    async def _observed(
        self, pending: Awaitable[HeartbeatAnswer], path: str, started: float
    ) -> HeartbeatAnswer:
        try:
            answer = await pending
        except CfsError as exc:
            self.metrics.heartbeat_errors.labels(str(exc.status)).inc()
            raise
        self.metrics.observe_heartbeat(path, started)
        return answer

    async def answer_relayed(self, report: HeartbeatReport) -> HeartbeatAnswer:
        """A heartbeat a follower relayed: the leader's rate limit applies too, so spreading
        one session's heartbeats over several nodes does not multiply its allowance."""
        self._limit(report)
        return await self.coordinator.heartbeat(report)

    def answer_relayed_now(
        self, report: HeartbeatReport
    ) -> HeartbeatAnswer | Coroutine[Any, Any, HeartbeatAnswer]:
        """``answer_relayed`` without a coroutine when the answer is there at once
        (``Coordinator.heartbeat_now``)."""
        self._limit(report)
        return self.coordinator.heartbeat_now(report)

    def _limit(self, report: HeartbeatReport) -> None:
        if self.heartbeat_limiter.enabled:
            group = self.replicator.state.groups.get(report.group_id)
            pending = group is not None and group.pending == report.session_id
            self.heartbeat_limiter.check(report.group_id, report.session_id, pending)

    def is_ready(self) -> tuple[bool, str]:
        """Ready = a leader is known, this node is caught up with it, and its API is published."""
        if self.draining:
            return False, "draining before shutdown"
        status = self.replicator.raw_status()
        if not status:
            return False, "replication not started"
        if status.get("leader") is None:
            return False, "no leader known"
        if self.replicator.is_leader() and not self.replicator.has_lease():
            return False, "leader without a current majority"
        if not self.replicator.is_leader() and not self._connected_to_leader():
            # pysyncobj keeps naming a lost leader while no peer is reachable (it only starts
            # an election when connected to someone), so "leader known" alone is not enough.
            return False, "not connected to the leader"
        problem = self.replicator.storage_problem()
        if problem is not None and not self.replicator.is_leader():
            # A follower that cannot append falls behind: send clients to the others. A
            # leader stays in rotation: it still answers heartbeats from memory, and every
            # write is refused wherever it is sent.
            return False, f"storage: {problem}"
        term = status.get("raft_term", 0)
        if self.replicator.state.opened_term != term:
            return False, f"waiting for the first entry of term {term}"
        commit, applied = status.get("commit_idx", 0), status.get("last_applied", 0)
        if applied < commit:
            return False, f"catching up (applied {applied} of {commit})"
        if self.settings.node_id not in self.replicator.state.members:
            return False, "member address not yet published"
        if not self.replicator.is_leader():
            # Followers answer heartbeats through the leader: if it refuses this node's
            # certificate check or signature, or cannot be connected to, send adapters elsewhere.
            reachable, why = self.relay.leader_reachable()
            if not reachable:
                return reachable, why
        if problem is not None:
            return True, f"ready, but writes are refused: {problem}"
        return True, "ready"

    def _connected_to_leader(self) -> bool:
        leader = self.replicator.leader_address()
        return any(m.raft == leader and m.connected for m in self.replicator.members())
