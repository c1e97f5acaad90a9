"""Applying the ClientFailover configuration at runtime (spec §5.3 items 5-7, §5.4, §5.7).

The router depends only on the ``FailoverRuntime`` protocol; ``AgentRuntime`` implements it by
starting, stopping and reconfiguring one ``cfs_cluster.agent.FailoverAgent``. Which of those a
change needs is decided by ``plan``, a pure function of the old and new configuration:

    no failover → failover              START    register group and session, heartbeat
    failover → none (deleted, Mode None) STOP     unregister the session, role back to Secondary
    FailoverGroupId changed              RESTART  unregister from the old group, join the new
    Mode, FailoverTimeout, credentials,
    TokenEndpoint, Endpoint or
    ValidateEndpointCertificate changed  RELOAD   the same agent adopts them in place
    Id, Name, Description changed        NOTHING  local bookkeeping only

A RELOAD keeps the agent, its session, its role and its grant (``FailoverAgent.reconfigure``):
a Primary stays Primary and keeps reporting its primary score, a new Mode is recorded and
applied when it is Secondary (spec §5.4), a new FailoverTimeout restarts the timer. A new
Endpoint keeps the session when the new endpoint knows it (another node of the same cluster, a
load balancer); when it does not (another service), the agent unregisters from the old one and
registers there.

The runtime also keeps ``System_FailoverState`` (spec §5.7) and feeds the failover health
(spec §5.9) on every change the agent reports.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from cfs_cluster.errors import BadRequest
from cfs_cluster.facet.failoverstate import (
    FailoverState,
    Restored,
    restored_from,
)
from cfs_cluster.facet.model import ClientFailoverConfig
from cfs_cluster.facet.plan import Action, plan
from cfs_cluster.protocol.wire import ClientRole

if TYPE_CHECKING:
    from cfs_cluster.agent import AgentSettings, RoleChange
    from cfs_cluster.agent.health import DeviceStatus, FailoverHealth
    from cfs_cluster.agent.status import EndpointHealth
    from cfs_cluster.facet.store import ConfigStore

__all__ = ["AgentRuntime", "FailoverRuntime", "RunningAgent", "agent_settings"]

log = logging.getLogger("cfs.facet")


class FailoverRuntime(Protocol):
    """What the facet needs from whatever runs failover (the agent, or a fake in tests)."""

    async def apply(self, config: ClientFailoverConfig | None) -> str:
        """Make ``config`` (None = no failover) effective; return what was done, for the log.

        Raise ``BadRequest`` before changing anything when the configuration cannot be run.
        """
        ...

    def state(self) -> FailoverState:
        """The current role, score and last data processed time."""
        ...

    async def close(self) -> None:
        """Stop for good (adapter shutdown): unregister, as the adapter framework does."""
        ...


# --------------------------------------------------------------------------- the agent


class RunningAgent(Protocol):
    """The part of ``cfs_cluster.agent.FailoverAgent`` the runtime uses."""

    async def start(self) -> None: ...

    async def stop(self, unregister: bool = True) -> None: ...

    async def reconfigure(self, settings: AgentSettings) -> None: ...

    @property
    def role(self) -> ClientRole: ...

    @property
    def epoch(self) -> int | None: ...

    @property
    def server_last_data_processed(self) -> dt.datetime | None: ...

    @property
    def last_data_processed(self) -> dt.datetime | None: ...

    @property
    def failover_score(self) -> float: ...

    @property
    def mode(self) -> str: ...

    @property
    def applied_mode(self) -> str: ...

    @property
    def endpoint_health(self) -> EndpointHealth: ...

    def grant_remaining(self) -> float: ...


AgentFactory = Callable[[ClientFailoverConfig, str, Restored], RunningAgent]
RoleCallback = Callable[["RoleChange"], Awaitable[None] | None]


def agent_settings(config: ClientFailoverConfig, session_id: str) -> AgentSettings:
    """The agent's settings for ``config``; imported lazily so the facet loads without it."""
    from cfs_cluster.agent import AgentSettings

    try:
        return AgentSettings(
            endpoints=(config.endpoint,),
            group_id=config.failover_group_id,
            session_id=session_id,
            failover_timeout=config.failover_timeout,
            mode=config.behaviour,
            username=config.username,
            password=config.password,
            client_id=config.client_id,
            client_secret=config.client_secret,
            # The seed's example pairs UserName/Password with a TokenEndpoint; a token is only
            # ever fetched for client credentials, so it is kept in the facet and not used.
            token_endpoint=config.token_endpoint if config.client_id else None,
            verify_tls=config.validate_endpoint_certificate,
        )
    except ValueError as exc:
        raise BadRequest(f"The failover agent refuses this configuration: {exc}") from exc


def default_session_id() -> str:
    """``{MachineName}.{ServiceName}`` like an adapter (spec §3.2), unique per facet instance."""
    from cfs_cluster.agent.settings import default_session_id as adapter_style_id

    return adapter_style_id("CfsFacet")


class AgentRuntime:
    """Runs at most one ``FailoverAgent`` and applies configuration changes to it.

    Args:
        session_id: this adapter's session id, kept across every restart of the agent (and,
            when the caller persists it, across process restarts); None generates one.
        score: the FailoverScore source handed to the agent (None: the agent's default).
        on_role_change: called by the agent on every local role change.
        factory: builds the agent; tests pass a fake. Default: ``FailoverAgent``.
        store: keeps ``System_FailoverState`` (spec §5.7); None keeps nothing.
        health: the failover health to report to (spec §5.9); None reports nothing.
    """

    def __init__(
        self,
        *,
        session_id: str | None = None,
        score: Callable[[], float] | None = None,
        on_role_change: RoleCallback | None = None,
        factory: AgentFactory | None = None,
        store: ConfigStore | None = None,
        health: FailoverHealth | None = None,
    ) -> None:
        self.session_id = session_id or default_session_id()
        self._score = score
        self._on_role_change = on_role_change
        self._factory = factory or self._real_agent
        self._store = store
        self._health = health
        self._config: ClientFailoverConfig | None = None
        self._agent: RunningAgent | None = None
        self._starting: asyncio.Task[None] | None = None
        self._closed = False
        self._first_start = True
        self._quiet = False  # stopping: the agent's last role change is not a state to save
        self._saved: tuple[ClientRole, float] | None = None
        self._lock = asyncio.Lock()

    @property
    def agent(self) -> RunningAgent | None:
        return self._agent

    def _real_agent(
        self, config: ClientFailoverConfig, session_id: str, restored: Restored
    ) -> RunningAgent:
        from cfs_cluster.agent import FailoverAgent

        settings = agent_settings(config, session_id)
        agent: RunningAgent = FailoverAgent(
            settings,
            score=self._score,
            on_role_change=self._on_role_change,
            on_change=restored.on_change,
            restored_role=restored.role,
            last_data_processed=restored.last_data_processed,
        )
        return agent

    async def apply(self, config: ClientFailoverConfig | None) -> str:
        async with self._lock:
            action = plan(self._config, config)
            if action is Action.RELOAD and self._agent is not None and config is not None:
                # Checked first: settings the agent refuses change nothing.
                settings = agent_settings(config, self.session_id)
                await self._settled()
                await self._agent.reconfigure(settings)
            else:
                await self._replace(action, config)
            self._config = config
            self._report_asset()
            self._on_agent_change()
            return _describe(action, config, self.session_id)

    async def _replace(self, action: Action, config: ClientFailoverConfig | None) -> None:
        """START, STOP, RESTART: a new agent (built first: one it refuses changes nothing)."""
        fresh = None
        if config is not None and action in _STARTS:
            fresh = self._factory(config, self.session_id, self._restored())
        if action in _STOPS:
            await self._halt(unregister=True)
        if action is Action.STOP and self._store is not None:
            self._store.save_state(None)  # spec §5.3 item 7: failover off, the state goes
            self._saved = None
        if fresh is not None:
            self._launch(fresh)

    def _restored(self) -> Restored:
        """Only the process's first agent starts from the saved state; a later one (a new
        group) starts as Secondary."""
        restored = Restored()
        if self._first_start and self._store is not None:
            restored = restored_from(self._store.load_state())
            if restored.role != ClientRole.Secondary:
                log.info(
                    "Restoring the failover role %s saved at a graceful stop.", restored.role.name
                )
        self._first_start = False
        return Restored(restored.role, restored.last_data_processed, self._on_agent_change)

    def state(self) -> FailoverState:
        agent = self._agent
        if agent is None:
            return FailoverState(
                adapter_state="Shutdown" if self._closed else "Running",
                mode=self._config.mode if self._config is not None else None,
            )
        health = agent.endpoint_health
        grant = agent.grant_remaining()
        return FailoverState(
            role=agent.role,
            last_data_processed=agent.server_last_data_processed or agent.last_data_processed,
            failover_score=agent.failover_score,
            mode=self._config.mode if self._config is not None else agent.mode,
            applied_mode=agent.applied_mode,
            endpoint_status=str(health.status),
            last_error=health.last_error,
            last_error_time=health.last_error_time,
            next_attempt_time=health.next_attempt_time,
            epoch=agent.epoch,
            grant_valid_for=round(grant, 3) if agent.role == ClientRole.Primary else None,
        )

    async def close(self) -> None:
        """Graceful stop: save the state as Shutdown (keeping the role), then unregister."""
        async with self._lock:
            await self._settled()
            last = self.state() if self._agent is not None else None
            self._quiet = True
            await self._halt(unregister=True)
            if last is not None and self._store is not None:
                self._store.save_state(last.to_saved("Shutdown"))
            self._closed = True

    async def started(self) -> None:
        """Wait until the agent's first registration and heartbeat are done (or failed)."""
        if self._starting is not None:
            await asyncio.shield(self._starting)

    def _on_agent_change(self) -> None:
        """The agent's role, score, mode or endpoint status changed: save and report."""
        if self._quiet:
            return
        state = self.state()
        if self._agent is not None and self._store is not None:
            key = (state.role, state.failover_score)
            if key != self._saved:  # spec §5.7: saved on every role or score change
                self._saved = key
                try:
                    self._store.save_state(state.to_saved("Running"))
                except Exception:
                    log.exception("Could not save the failover state")
        if self._health is not None:
            self._health.report(
                _device_status(self._agent),
                state.failover_score,
                state.role if self._agent is not None else None,
            )

    def _report_asset(self) -> None:
        if self._health is None:
            return
        from cfs_cluster.agent.health import FailoverAsset

        config = self._config
        if config is None or not config.enabled:
            self._health.set_asset(FailoverAsset())
        else:
            self._health.set_asset(
                FailoverAsset(config.failover_group_id, config.mode, config.endpoint)
            )

    def _launch(self, agent: RunningAgent) -> None:
        """Start in the background: the agent's first round trip can take its request timeout
        (an unreachable endpoint), and a configuration request should not wait for it."""
        self._agent = agent
        self._starting = asyncio.create_task(_start(agent), name="cfs-facet-agent-start")

    async def _settled(self) -> None:
        """Let a start in progress finish: stopping or reconfiguring half-way would race it."""
        if self._starting is not None:
            await self._starting
            self._starting = None

    async def _halt(self, *, unregister: bool) -> None:
        await self._settled()
        if self._agent is not None:
            await self._agent.stop(unregister=unregister)
            self._agent = None


def _device_status(agent: RunningAgent | None) -> DeviceStatus:
    """The failover component's DeviceStatus (spec §5.9) for the agent's endpoint status."""
    from cfs_cluster.agent.health import DeviceStatus
    from cfs_cluster.agent.status import EndpointStatus

    if agent is None:
        return DeviceStatus.NotConfigured
    status = agent.endpoint_health.status
    if status == EndpointStatus.NotConnected:
        return DeviceStatus.Starting
    return DeviceStatus.Good if status == EndpointStatus.Connected else DeviceStatus.DeviceInError


async def _start(agent: RunningAgent) -> None:
    try:
        await agent.start()
    except Exception:  # the agent retries by itself; a start that raises is only logged
        log.exception("The failover agent failed to start.")


_STARTS = (Action.START, Action.RESTART)
_STOPS = (Action.STOP, Action.RESTART)


def _describe(action: Action, config: ClientFailoverConfig | None, session_id: str) -> str:
    """A short sentence for the log and the tests (patroni's run_cycle style)."""
    if action is Action.STOP:
        return f"failover off: session {session_id} stopped and unregistered"
    if config is None or action is Action.NOTHING:
        return "no change to the running failover agent"
    where = f"group {config.failover_group_id} at {config.endpoint}"
    verbs = {
        Action.START: "failover on: registering session {s} in {w}",
        Action.RESTART: "failover moved: session {s} unregistered and re-registered in {w}",
        Action.RELOAD: "failover settings adopted in place by session {s} in {w} "
        "(role and grant kept)",
    }
    return verbs[action].format(s=session_id, w=where)
