"""FailoverAgent: the adapter side of client failover for asyncio collectors.

It speaks the protocol as an AVEVA adapter does (spec §5.3; AF FailoverEndpointManager):

1. ``POST groups/`` ``{"Id", "FailoverTimeout"}``; on 409 read the group and adopt its timeout.
2. ``POST groups/{g}/clientsessions`` ``{"Id", "Name"}``.
3. A heartbeat at once, then every T/2: ``{"FailoverScore", "LastDataProcessedTime"}``. A
   ``PendingPrimary`` answer is confirmed at once, at most 10 times in a row. 404 re-registers,
   429 waits Retry-After, an unreachable service is retried every T/2.
4. On stop, ``DELETE groups/{g}/clientsessions/{s}``.

What it adds: several node URLs (rotating on connection errors and 503), self-demotion when the
last Primary grant's ``ValidFor`` lapses (grant.py), the grant's epoch for fencing, role-change
callbacks, and a long-poll on ``…/clientsessions/{s}/role`` so a secondary hears of its
promotion at once. The long-poll never grants anything: on news it sends a heartbeat, and only a
heartbeat answer makes the agent Primary.

Reconfiguration (``reconfigure``) happens in place, as the adapter framework's does (spec §5.3
item 6): new credentials swap the HTTP client, a new FailoverTimeout restarts the timer, a new
Mode is recorded and applied when the agent is (or becomes) Secondary (spec §5.4), and a new
endpoint keeps the session when the new endpoint knows it. The role and the grant are kept
throughout: a Primary stays Primary and keeps reporting its primary score.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import inspect
import logging
from collections.abc import Awaitable, Callable

import httpx

from cfs_cluster.agent.grant import Grant, RoleAnswer, RoleChange, next_role
from cfs_cluster.agent.service import FailoverService, make_client
from cfs_cluster.agent.settings import AgentSettings, default_session_id
from cfs_cluster.agent.status import AgentState, EndpointHealth, EndpointStatus, endpoint_status
from cfs_cluster.agent.transport import (
    EndpointError,
    EndpointNotFound,
    EndpointPool,
    EndpointUnavailable,
    RateLimited,
)
from cfs_cluster.protocol.wire import (
    TICKS_PER_SECOND,
    ClientRole,
    format_timespan,
    ticks_from_unix,
    unix_from_ticks,
)

__all__ = ["FailoverAgent"]

log = logging.getLogger("cfs.agent")

MAX_CONFIRMATIONS = 10  # AF _pendingPrimaryRetries
LONG_POLL_BACKOFF = 1.0  # seconds between long-polls that fail
MIN_RETRY = 0.2  # never retry faster than this, whatever Retry-After says
# How much of its grant a Primary keeps in hand when it sends a heartbeat: a Raft leader
# change costs up to ~1.5 s of failed heartbeats on the default settings (an election within
# raft_max_timeout = 1 s after the leader's last message, the new leader's first entry, the
# next retry). A Primary renews early enough that a heartbeat failing for that long still
# finds its grant valid, so a leader kill never makes it drop the role (docs/safety.md).
LEADER_CHANGE_RESERVE = 1.5
PRIMARY_RETRY = MIN_RETRY  # a Primary whose grant runs retries this often, not at Retry-After


RoleCallback = Callable[[RoleChange], Awaitable[None] | None]
ChangeCallback = Callable[[], None]


class FailoverAgent:
    """Joins a failover group and keeps this adapter's role current.

    Usage::

        agent = FailoverAgent(AgentSettings(endpoints=(url,), group_id="Line1"))
        await agent.start()
        if agent.role == ClientRole.Primary: ...
        await agent.stop()
    """

    def __init__(
        self,
        settings: AgentSettings,
        *,
        score: Callable[[], float] | None = None,
        on_role_change: RoleCallback | None = None,
        on_change: ChangeCallback | None = None,
        restored_role: ClientRole = ClientRole.Secondary,
        last_data_processed: dt.datetime | None = None,
    ) -> None:
        """
        Args:
            score: this adapter's FailoverScore (0-100); None: 100, or standby 1 for a Cold
                Secondary (spec §4.1 item 9).
            on_role_change: called on every local role change.
            on_change: called (synchronously, no I/O) whenever the role, the score, the applied
                mode or the endpoint's status changes: for persistence and diagnostics.
            restored_role: the role saved before a graceful stop (spec §5.7). A restored
                Primary scores as a Primary until the first answer, but never *acts* as one
                without a grant (P1): ``role`` stays Secondary until a heartbeat grants it.
            last_data_processed: the LastDataProcessedTime saved before the restart.
        """
        self.settings = settings
        self.session_id = settings.session_id or default_session_id()
        self._score_fn = score
        self._on_role_change = on_role_change
        self._on_change = on_change
        self._timeout = settings.failover_timeout
        self._applied_mode = settings.mode.capitalize()
        self._claims_primary = restored_role == ClientRole.Primary
        self._role = ClientRole.Secondary
        self._state = AgentState.Stopped
        self._grant = Grant()
        # The highest grant epoch this agent will never act on again: it was told another
        # role at that epoch, or the grant lapsed on its clock. Sent as HeldEpoch, so the
        # service may hand the role on at once instead of waiting for the grant to lapse.
        self._dropped = -1
        self._answered: tuple[ClientRole, int | None] | None = None  # last heartbeat answer
        self._polled: tuple[ClientRole, int | None] | None = None  # what the long-poll knows
        self._server_ldpt = 0
        self._ldpt: int | None = None  # ticks the adapter reported
        if last_data_processed is not None:
            self.report_data_processed(last_data_processed)
        self._score = 0.0
        self._registered = asyncio.Event()
        self._poke = asyncio.Event()
        self._reconfigured = asyncio.Event()
        self._role_event = asyncio.Event()
        self._cycle_done = asyncio.Event()  # replaced and set after every heartbeat round
        self._lapse: asyncio.TimerHandle | None = None
        self._callbacks: asyncio.Queue[Awaitable[None]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self._service: FailoverService | None = None
        self._last_error: str | None = None
        self._health = EndpointHealth()
        self._previous: tuple[httpx.AsyncClient, FailoverService] | None = None  # see reconfigure
        self._round = asyncio.Lock()  # one heartbeat round, or one reconfiguration, at a time
        self._poll_works = False  # the service answers role long-polls

    # ----------------------------------------------------------------- public state

    @property
    def role(self) -> ClientRole:
        """Primary only while a grant is valid; Secondary otherwise (PendingPrimary is not kept)."""
        return self._role

    @property
    def epoch(self) -> int | None:
        """The group's grant epoch in the last answer; tag downstream writes with it to fence."""
        return self._grant.epoch

    @property
    def server_last_data_processed(self) -> dt.datetime | None:
        """The group's LastDataProcessedTime from the last answer (None = unknown)."""
        if self._server_ldpt <= 0:
            return None
        return dt.datetime.fromtimestamp(unix_from_ticks(self._server_ldpt), dt.UTC)

    @property
    def failover_score(self) -> float:
        """The FailoverScore sent with the last heartbeat."""
        return self._score

    @property
    def failover_timeout(self) -> float:
        """T in seconds: the configured one, or the server's when the group had another."""
        return self._timeout

    @property
    def mode(self) -> str:
        """The configured mode (``Hot``, ``Warm``, ``Cold``)."""
        return self.settings.mode.capitalize()

    @property
    def applied_mode(self) -> str:
        """The mode a Secondary's components follow now (spec §5.4).

        A mode change while Primary is recorded in ``mode`` and applied here only when the agent
        is Secondary again; a Primary runs everything whatever the mode.
        """
        return self._applied_mode

    @property
    def endpoint_health(self) -> EndpointHealth:
        """The endpoint's status, the last error and when the next attempt is due."""
        return self._health

    @property
    def last_data_processed(self) -> dt.datetime | None:
        """The LastDataProcessedTime this adapter reports (None = not yet known)."""
        if self._ldpt is None or self._ldpt <= 0:
            return None
        return dt.datetime.fromtimestamp(unix_from_ticks(self._ldpt), dt.UTC)

    def grant_remaining(self) -> float:
        """Seconds the current Primary grant stays valid (0 when not Primary)."""
        if self._role != ClientRole.Primary:
            return 0.0
        return self._grant.remaining(asyncio.get_running_loop().time())

    @property
    def state(self) -> AgentState:
        """``Stopped``, ``Starting``, ``Running`` (last heartbeat answered) or ``Error``."""
        return self._state

    def report_data_processed(self, when: dt.datetime) -> None:
        """The adapter's LastDataProcessedTime, sent with the next heartbeat (naive = UTC)."""
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        self._ldpt = ticks_from_unix(when.timestamp())

    async def wait_for_role(self, role: ClientRole, timeout: float) -> bool:
        """Wait until the local role is ``role``; False after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._role != role:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await _wait(self._role_event, remaining)
        return True

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Register and send the first heartbeat; return once it is answered or has failed."""
        if self._tasks:
            raise RuntimeError("The agent is already started.")
        self._state = AgentState.Starting
        self._client, self._service = self._connect(self.settings)
        self._tasks.append(asyncio.create_task(self._dispatch_callbacks(), name="cfs-agent-cb"))
        first_delay = await self._cycle()
        self._tasks.append(
            asyncio.create_task(self._heartbeat_loop(first_delay), name="cfs-agent-heartbeat")
        )
        self._tasks.append(asyncio.create_task(self._long_poll_loop(), name="cfs-agent-poll"))

    def _connect(self, settings: AgentSettings) -> tuple[httpx.AsyncClient, FailoverService]:
        client = make_client(settings)
        pool = EndpointPool(settings.endpoints, client)
        return client, FailoverService(pool, settings, self.session_id)

    async def reconfigure(self, settings: AgentSettings) -> None:
        """Adopt new settings in place, keeping the session, the role and the grant.

        ``group_id`` and ``session_id`` cannot change here (that is another session: stop and
        start a new agent). New credentials, TLS options or endpoints swap the HTTP client; a
        new FailoverTimeout restarts the timer (the group's timeout on the server is not
        changed, spec §5.3 item 6); a new mode is recorded and applied only as Secondary.
        The next heartbeat is sent at once, so a refused credential shows without waiting T/2.
        """
        if settings.group_id != self.settings.group_id:
            raise ValueError("reconfigure cannot change group_id; start another agent.")
        if (settings.session_id or self.session_id) != self.session_id:
            raise ValueError("reconfigure cannot change session_id; start another agent.")
        settings = dataclasses.replace(settings, session_id=self.session_id)
        async with self._round:
            old = self.settings
            self.settings = settings
            if settings.failover_timeout != old.failover_timeout:
                self._timeout = settings.failover_timeout
            self._apply_mode("reconfigured")
            if self._client is not None and _transport(settings) != _transport(old):
                await self._swap_client(moved=settings.endpoints != old.endpoints)
        self._restart_long_poll()
        self._poke.set()
        self._reconfigured.set()
        self._changed()

    async def _swap_client(self, *, moved: bool) -> None:
        """Use a new HTTP client; after an endpoint change keep the old one until the new
        endpoint says whether it knows this session (then it is the same service)."""
        assert self._client is not None and self._service is not None
        old = (self._client, self._service)
        self._client, self._service = self._connect(self.settings)
        if moved and self._registered.is_set():
            await self._forget_previous()
            self._previous = old
        else:
            await old[0].aclose()

    async def _forget_previous(self, *, unregister: bool = False) -> None:
        """Close the old endpoint's client; unregister there first when the new endpoint
        turned out to be another service (it did not know the session)."""
        if self._previous is None:
            return
        client, service = self._previous
        self._previous = None
        if unregister:
            await service.unregister()
        await client.aclose()

    def _restart_long_poll(self) -> None:
        """A held long-poll uses the old client: start it again over the new one."""
        if len(self._tasks) < 3:
            return
        self._tasks[2].cancel()
        self._tasks[2] = asyncio.create_task(self._long_poll_loop(), name="cfs-agent-poll")

    async def stop(self, unregister: bool = True) -> None:
        """Stop heartbeating; unregister the session unless ``unregister`` is False (a crash)."""
        if self._client is None:
            return
        dispatcher, loops = self._tasks[:1], self._tasks[1:]
        for task in loops:
            task.cancel()
        for task in loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._cancel_lapse()
        if unregister and self._registered.is_set():
            await self._resign()
            await self._require_service().unregister()
        self._registered.clear()
        self._set_role(ClientRole.Secondary, "agent stopped")
        await self._drain_callbacks(dispatcher)
        await self._forget_previous()
        await self._client.aclose()
        self._client, self._service, self._tasks = None, None, []
        self._state = AgentState.Stopped

    async def _resign(self) -> None:
        """Drop the grant and say so before deleting the session: a deletion alone does not tell
        the service that this adapter stopped acting, so the next primary would wait for the
        grant to lapse. Best effort: the session is deleted either way."""
        if self._role != ClientRole.Primary:
            return
        self._drop(self._grant.epoch)
        self._set_role(ClientRole.Secondary, "agent stopping")
        with contextlib.suppress(EndpointError):
            await self._require_service().heartbeat(0.0, self._ldpt, self._held())

    # ----------------------------------------------------------------- heartbeats

    async def _heartbeat_loop(self, delay: float) -> None:
        while True:
            if self._state == AgentState.Error:
                # A retry delay (Retry-After) is not cut short, except by new settings.
                await _wait(self._reconfigured, delay)
            else:
                await _wait(self._poke, delay)
            delay = await self._cycle()

    async def _cycle(self) -> float:
        """One round: (re-)register if needed, heartbeat, confirm; seconds until the next round."""
        async with self._round:
            self._poke.clear()
            self._reconfigured.clear()
            try:
                delay = await self._round_trip()
            finally:
                event, self._cycle_done = self._cycle_done, asyncio.Event()
                event.set()
            self._health = dataclasses.replace(self._health, next_attempt_time=_wall_in(delay))
            self._changed()
            return delay

    async def _round_trip(self) -> float:
        try:
            try:
                await self._register_and_beat()
            except EndpointNotFound:
                # After an endpoint change this means another service: leave the old one.
                await self._forget_previous(unregister=True)
                self._lost_registration()
                await self._register_and_beat()  # at once, as the adapter does
        except EndpointError as exc:
            delay = self._retry_delay(exc)
            self._failed(exc, delay)
            return delay
        await self._forget_previous()  # the new endpoint knew the session: the same service
        self._recovered()
        return self._next_heartbeat()

    def _next_heartbeat(self) -> float:
        """T/2, as the protocol says; a Primary sooner (down to T/4) when that leaves less
        than ``LEADER_CHANGE_RESERVE`` of its grant at the next heartbeat (small T only:
        from T = 3 s on, T/2 already does)."""
        half = self._timeout / 2
        if self._role != ClientRole.Primary:
            return half
        now = asyncio.get_running_loop().time()
        return min(half, max(half / 2, self._grant.valid_until - LEADER_CHANGE_RESERVE - now))

    async def _register_and_beat(self) -> None:
        self._current_score()  # known (and saved) even while the endpoint cannot be reached
        if not self._registered.is_set():
            await self._register_group()
            await self._require_service().register_session()
            self._registered.set()
        # With a working long-poll one confirmation is enough: while the old primary's grant
        # is still held, more cannot succeed, and the poll answers as soon as it is released.
        confirmations = 1 if self._poll_works else MAX_CONFIRMATIONS
        for _ in range(confirmations + 1):
            answer = await self._heartbeat()
            if answer.role == ClientRole.Primary and self._score != self._current_score():
                # A Cold standby was granted on its standby score (1); tell the service the
                # primary's score at once, or a Hot secondary beating 1 would take the role
                # at its next heartbeat (a needless hand-over, P2).
                await self._heartbeat()
            if answer.role != ClientRole.PendingPrimary:
                return
            log.info("Sending primary confirmation.")
        if self._poll_works:
            log.debug("Still PendingPrimary; waiting for the role long-poll.")
            return
        log.warning(
            "Failover did not assign primary role to the adapter after %d. "
            "Stopping sending primary confirmation.",
            MAX_CONFIRMATIONS,
        )

    async def _heartbeat(self) -> RoleAnswer:
        self._current_score()
        sent_at = asyncio.get_running_loop().time()
        answer = await self._require_service().heartbeat(self._score, self._ldpt, self._held())
        self._apply(answer, sent_at)
        self._claims_primary = False  # the service has spoken: the restored role is spent
        return answer

    def _held(self) -> tuple[ClientRole, int | None]:
        """HeldRole and HeldEpoch for the next heartbeat: what this agent acts on as it sends.
        Heartbeats go one at a time, so no answer to an earlier one can change it later."""
        if self._role == ClientRole.Primary:
            return ClientRole.Primary, self._grant.epoch
        return ClientRole.Secondary, self._dropped if self._dropped >= 0 else None

    def _drop(self, epoch: int | None) -> None:
        if epoch is not None:
            self._dropped = max(self._dropped, epoch)

    def _apply(self, answer: RoleAnswer, sent_at: float) -> None:
        loop = asyncio.get_running_loop()
        self._answered = self._polled = (answer.role, answer.epoch)
        self._server_ldpt = answer.last_data_processed
        was_primary = self._role == ClientRole.Primary
        if answer.role != ClientRole.Primary:
            self._drop(answer.epoch)
        self._grant = Grant.from_answer(answer, sent_at, self._timeout)
        valid = self._grant.valid(loop.time()) and not self._grant.dropped(self._dropped)
        role = next_role(self._role, answer.role, valid)
        if role == ClientRole.Primary:
            self._arm_lapse(self._grant.valid_until)
        else:
            self._cancel_lapse()
        self._set_role(role, f"heartbeat answered {answer.role.name} (epoch {answer.epoch})")
        if was_primary and role != ClientRole.Primary:
            self._poke.set()  # acknowledge at once: the hand-over waits for it

    def _current_score(self) -> float:
        if self._score_fn is not None:
            score = max(0.0, min(100.0, float(self._score_fn())))
        elif self._standby():
            score = 1.0  # spec §4.1 item 9: a cold secondary is on standby, below any primary
        else:
            score = 100.0
        if score != self._score:
            self._score = score
            self._changed()
        return score

    def _standby(self) -> bool:
        """A Cold Secondary: its components are stopped (spec §5.4). A Primary never is, and
        the mode it reports by is the applied one, so a mode change while Primary does not
        lower its score."""
        primary = self._role == ClientRole.Primary or self._claims_primary
        return self._applied_mode == "Cold" and not primary

    def _retry_delay(self, exc: EndpointError) -> float:
        delay = self._service_retry_delay(exc)
        if self._role == ClientRole.Primary and not isinstance(exc, RateLimited):
            # Its grant runs out on its own clock: keep trying (every node, every 0.2 s)
            # rather than wait a whole second of Retry-After, so the new leader renews it.
            return min(delay, PRIMARY_RETRY)
        return delay

    def _service_retry_delay(self, exc: EndpointError) -> float:
        half = self._timeout / 2
        if isinstance(exc, RateLimited | EndpointUnavailable) and exc.retry_after is not None:
            return min(max(exc.retry_after, MIN_RETRY), half)
        if isinstance(exc, EndpointUnavailable):
            return min(1.0, half)  # an election takes about a second
        return half

    def _failed(self, exc: EndpointError, delay: float) -> None:
        self._state = AgentState.Error
        text = str(exc)
        self._health = EndpointHealth(endpoint_status(exc), text, dt.datetime.now(dt.UTC))
        if text != self._last_error:  # logged once per distinct failure, as the adapter does
            log.error(
                "Could not send heartbeat to endpoint %s. %s (next attempt in %.3g s; "
                "retried every FailoverTimeout/2 = %.3g s)",
                self._require_service().pool.current,
                text,
                delay,
                self._timeout / 2,
            )
            self._last_error = text

    def _recovered(self) -> None:
        if self._last_error is not None:
            log.info("Heartbeats to the failover endpoint succeed again.")
            self._last_error = None
        self._state = AgentState.Running
        # The last error stays visible (with its time) after recovery: what happened, and when.
        self._health = dataclasses.replace(self._health, status=EndpointStatus.Connected)

    def _lost_registration(self) -> None:
        log.warning(
            "Group or session could not be found on the failover endpoint. "
            "Reattempting to create group and/or session."
        )
        self._registered.clear()
        self._cancel_lapse()
        self._drop(self._grant.epoch)
        self._set_role(ClientRole.Secondary, "session not found on the service")

    # ----------------------------------------------------------------- registration

    async def _register_group(self) -> None:
        server = await self._require_service().register_group(self._timeout)
        if server is not None and server > 0 and server != self._timeout:
            log.warning(
                "Server had a different failover timeout (%s) than the configured one (%s). "
                "Server timeout will be used.",
                format_timespan(round(server * TICKS_PER_SECOND)),
                format_timespan(round(self._timeout * TICKS_PER_SECOND)),
            )
            self._timeout = server

    # ----------------------------------------------------------------- long-poll

    async def _long_poll_loop(self) -> None:
        """Wait on the service for news of this session's role; on news, heartbeat at once."""
        while True:
            await self._registered.wait()
            try:
                answer = await self._require_service().poll_role(self._polled)
            except EndpointError as exc:
                self._poll_works = False
                # 404 also means a service without the long-poll (a commercial CFS): be gentle.
                delay = (
                    self._timeout / 2 if isinstance(exc, EndpointNotFound) else LONG_POLL_BACKOFF
                )
                log.debug("Role long-poll failed (%s); next in %.1f s", exc, delay)
                if isinstance(exc, EndpointNotFound):
                    self._poke.set()
                await asyncio.sleep(min(delay, self._timeout / 2))
                continue
            self._poll_works = True
            if self._predates_heartbeat(answer):
                # A node that has not yet applied what the last heartbeat was answered, or a
                # poll answered just before that heartbeat's grant: old news, not a change.
                # Ask again shortly (a lagging node would answer at once again: no spinning).
                log.debug(
                    "Role long-poll answered epoch %s, older than known; ignored", answer.epoch
                )
                await asyncio.sleep(min(LONG_POLL_BACKOFF, self._timeout / 2))
                continue
            if self._on_polled(answer):
                # Let the heartbeat it triggered finish before asking again: the next poll
                # then carries what that heartbeat learnt, so polls never spin.
                await _wait(self._cycle_done, self._timeout / 2)

    def _predates_heartbeat(self, answer: RoleAnswer) -> bool:
        """True when the answer's epoch is older than the last heartbeat answer's.

        The epoch only grows (a grant increments it), so such an answer describes the group
        before a grant this agent already heard of. Acting on it would demote a primary that
        was just granted (a spurious Primary -> Secondary -> Primary). Ignoring it is safe:
        the grant still lapses on its own clock, and heartbeats stay authoritative.
        """
        if self._answered is None or answer.epoch is None:
            return False
        known = self._answered[1]
        return known is not None and answer.epoch < known

    def _on_polled(self, answer: RoleAnswer) -> bool:
        """Act on a long-poll answer; True when it asked for a heartbeat."""
        news = (answer.role, answer.epoch)
        self._polled = news
        pending = answer.role == ClientRole.PendingPrimary  # answered early: the grant is free
        if news == self._answered and not pending:
            return False  # a heartbeat already told us (the poll was in flight meanwhile)
        if self._role == ClientRole.Primary and answer.role != ClientRole.Primary:
            # Stepping down early is always safe; only a heartbeat can make us Primary.
            self._drop(self._grant.epoch)
            self._cancel_lapse()
            self._set_role(ClientRole.Secondary, f"role long-poll answered {answer.role.name}")
        log.debug("Role long-poll: %s epoch %s; heartbeating now", answer.role.name, answer.epoch)
        self._poke.set()
        return True

    # ----------------------------------------------------------------- grant validity

    def _arm_lapse(self, valid_until: float) -> None:
        self._cancel_lapse()
        self._lapse = asyncio.get_running_loop().call_at(valid_until, self._grant_lapsed)

    def _cancel_lapse(self) -> None:
        if self._lapse is not None:
            self._lapse.cancel()
            self._lapse = None

    def _grant_lapsed(self) -> None:
        self._lapse = None
        if self._role == ClientRole.Primary and not self._grant.valid(
            asyncio.get_running_loop().time()
        ):
            log.warning(
                "The Primary grant (epoch %s) lapsed without renewal; acting as Secondary.",
                self._grant.epoch,
            )
            self._drop(self._grant.epoch)
            self._set_role(ClientRole.Secondary, "Primary grant lapsed without renewal")

    # ----------------------------------------------------------------- role changes

    def _set_role(self, role: ClientRole, reason: str) -> None:
        old = self._role
        if role == old:
            return
        self._role = role
        log.info("Failover role changed from %s to %s (%s).", old.name, role.name, reason)
        event, self._role_event = self._role_event, asyncio.Event()
        event.set()
        self._apply_mode("now Secondary")
        self._changed()
        if self._on_role_change is None:
            return
        change = RoleChange(old, role, self._grant.epoch, reason)
        try:
            result = self._on_role_change(change)
        except Exception:
            log.exception("The role-change callback failed")
            return
        if inspect.isawaitable(result):
            self._callbacks.put_nowait(result)  # run in order, without blocking heartbeats

    async def _dispatch_callbacks(self) -> None:
        while True:
            pending = await self._callbacks.get()
            try:
                await pending
            except Exception:
                log.exception("The role-change callback failed")
            finally:
                self._callbacks.task_done()

    async def _drain_callbacks(self, dispatcher: list[asyncio.Task[None]]) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.request_timeout):
                await self._callbacks.join()
        for task in dispatcher:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _apply_mode(self, why: str) -> None:
        """Apply the configured mode unless Primary (spec §5.4: recorded, applied later)."""
        if self.mode == self._applied_mode:
            return
        if self._role == ClientRole.Primary:
            log.info(
                "Failover mode %s recorded; applied when this adapter is Secondary (%s now).",
                self.mode,
                self._applied_mode,
            )
            return
        log.info("Failover mode changed from %s to %s (%s).", self._applied_mode, self.mode, why)
        self._applied_mode = self.mode
        self._changed()

    def _changed(self) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change()
        except Exception:
            log.exception("The change callback failed")

    def _require_service(self) -> FailoverService:
        if self._service is None:
            raise RuntimeError("The agent is not started.")
        return self._service


def _transport(settings: AgentSettings) -> tuple[object, ...]:
    """What the HTTP client is built from: a change needs a new client."""
    return (
        settings.endpoints,
        settings.username,
        settings.password,
        settings.client_id,
        settings.client_secret,
        settings.token_endpoint,
        settings.verify_tls,
        settings.ca_file,
        settings.request_timeout,
    )


def _wall_in(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    """Wait for ``event`` at most ``timeout`` seconds; False on timeout.

    Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation that arrives as the
    event is set (gh-86296), and stop() cancels loops exactly when a round ends.
    """
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
