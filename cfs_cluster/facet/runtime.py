"""Applying the ClientFailover configuration at runtime (spec §5.3 items 5-7).

The router depends only on the ``FailoverRuntime`` protocol; ``AgentRuntime`` implements it by
starting, stopping and restarting one ``cfs_cluster.agent.FailoverAgent``. Which of those a
change needs is decided by ``plan``, a pure function of the old and new configuration:

    no failover → failover              START    register group and session, heartbeat
    failover → none (deleted, Mode None) STOP     unregister the session, role back to Secondary
    Endpoint, ValidateEndpointCertificate
    or FailoverGroupId changed           RESTART  unregister from the old, register with the new
    credentials, TokenEndpoint,
    FailoverTimeout or Mode changed      RELOAD   same session, new settings, no unregister
    Id, Name, Description changed        NOTHING  local bookkeeping only

The adapter framework swaps credentials or restarts its heartbeat timer in place; the agent's
settings are immutable, so RELOAD stops it *without* unregistering and starts a new one with the
same session id. The server never sees the session leave, so a Primary stays Primary (its new
agent re-registers idempotently and its first heartbeat confirms the role).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from cfs_cluster.errors import BadRequest
from cfs_cluster.facet.model import ClientFailoverConfig
from cfs_cluster.protocol.wire import MIN_DATETIME_TEXT, ClientRole, format_datetime

if TYPE_CHECKING:
    from cfs_cluster.agent import AgentSettings, RoleChange

__all__ = [
    "Action",
    "AgentRuntime",
    "FailoverRuntime",
    "FailoverState",
    "RunningAgent",
    "agent_settings",
    "plan",
]

log = logging.getLogger("cfs.facet")
_YEAR_ONE = dt.datetime(1, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class FailoverState:
    """What ``GET api/v1/diagnostics/FailoverState`` reports (seed 002; spec §5.2, §5.7)."""

    role: ClientRole = ClientRole.Secondary
    last_data_processed: dt.datetime | None = None
    failover_score: float = 0.0
    # The adapter framework's REST answer always says Running; Shutdown is only ever persisted.
    adapter_state: str = "Running"

    def to_json(self) -> dict[str, Any]:
        return {
            "Role": self.role.name,
            "LastDataProcessedTime": format_time(self.last_data_processed),
            "FailoverScore": self.failover_score,
            "AdapterState": self.adapter_state,
        }


def format_time(value: dt.datetime | None) -> str:
    """ISO 8601 in UTC as .NET writes it; unknown is DateTime.MinValue, never null (spec §3.4)."""
    if value is None:
        return MIN_DATETIME_TEXT
    aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    return format_datetime((aware - _YEAR_ONE) // _MICROSECOND * 10)


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


# --------------------------------------------------------------------------- planning


class Action(StrEnum):
    NOTHING = "nothing"
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    RELOAD = "reload"


def _active(config: ClientFailoverConfig | None) -> bool:
    return config is not None and config.enabled


def _identity(config: ClientFailoverConfig) -> tuple[Any, ...]:
    """Changing any of these means another server or group: the session must move."""
    return (config.endpoint, config.validate_endpoint_certificate, config.failover_group_id)


def _tuning(config: ClientFailoverConfig) -> tuple[Any, ...]:
    """Changing any of these keeps the session; the agent restarts with new settings."""
    return (
        config.username,
        config.password,
        config.client_id,
        config.client_secret,
        config.token_endpoint,
        config.failover_timeout,
        config.mode,
    )


def plan(old: ClientFailoverConfig | None, new: ClientFailoverConfig | None) -> Action:
    """What the running agent must do to go from ``old`` to ``new`` (see the module table)."""
    if not _active(old):
        return Action.START if _active(new) else Action.NOTHING
    if not _active(new):
        return Action.STOP
    assert old is not None and new is not None  # both active
    if _identity(old) != _identity(new):
        return Action.RESTART
    if _tuning(old) != _tuning(new):
        return Action.RELOAD
    return Action.NOTHING


# --------------------------------------------------------------------------- the agent


class RunningAgent(Protocol):
    """The part of ``cfs_cluster.agent.FailoverAgent`` the runtime uses."""

    async def start(self) -> None: ...

    async def stop(self, unregister: bool = True) -> None: ...

    @property
    def role(self) -> ClientRole: ...

    @property
    def server_last_data_processed(self) -> dt.datetime | None: ...

    @property
    def failover_score(self) -> float: ...


AgentFactory = Callable[[ClientFailoverConfig, str], RunningAgent]
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
            mode=config.mode,
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
    return f"{socket.gethostname()}.CfsFacet.{uuid.uuid4().hex[:12]}"


class AgentRuntime:
    """Runs at most one ``FailoverAgent`` and applies configuration changes to it.

    Args:
        session_id: this adapter's session id, kept across every restart of the agent (and,
            when the caller persists it, across process restarts); None generates one.
        score: the FailoverScore source handed to the agent (None: the agent's default).
        on_role_change: called by the agent on every local role change.
        factory: builds the agent; tests pass a fake. Default: ``FailoverAgent``.
    """

    def __init__(
        self,
        *,
        session_id: str | None = None,
        score: Callable[[], float] | None = None,
        on_role_change: RoleCallback | None = None,
        factory: AgentFactory | None = None,
    ) -> None:
        self.session_id = session_id or default_session_id()
        self._score = score
        self._on_role_change = on_role_change
        self._factory = factory or self._real_agent
        self._config: ClientFailoverConfig | None = None
        self._agent: RunningAgent | None = None
        self._starting: asyncio.Task[None] | None = None
        self._closed = False
        self._lock = asyncio.Lock()

    @property
    def agent(self) -> RunningAgent | None:
        return self._agent

    def _real_agent(self, config: ClientFailoverConfig, session_id: str) -> RunningAgent:
        from cfs_cluster.agent import FailoverAgent

        settings = agent_settings(config, session_id)
        agent: RunningAgent = FailoverAgent(
            settings, score=self._score, on_role_change=self._on_role_change
        )
        return agent

    async def apply(self, config: ClientFailoverConfig | None) -> str:
        async with self._lock:
            action = plan(self._config, config)
            # Build the new agent first: a configuration it refuses changes nothing.
            fresh = self._factory(config, self.session_id) if config and action in _STARTS else None
            if action in _STOPS:
                await self._halt(unregister=action is not Action.RELOAD)
            if fresh is not None:
                self._launch(fresh)
            self._config = config
            return _describe(action, config, self.session_id)

    def state(self) -> FailoverState:
        agent = self._agent
        if agent is None:
            return FailoverState(adapter_state="Shutdown" if self._closed else "Running")
        return FailoverState(
            role=agent.role,
            last_data_processed=agent.server_last_data_processed,
            failover_score=agent.failover_score,
        )

    async def close(self) -> None:
        async with self._lock:
            await self._halt(unregister=True)
            self._closed = True

    async def started(self) -> None:
        """Wait until the agent's first registration and heartbeat are done (or failed)."""
        if self._starting is not None:
            await asyncio.shield(self._starting)

    def _launch(self, agent: RunningAgent) -> None:
        """Start in the background: the agent's first round trip can take its request timeout
        (an unreachable endpoint), and a configuration request should not wait for it."""
        self._agent = agent
        self._starting = asyncio.create_task(_start(agent), name="cfs-facet-agent-start")

    async def _halt(self, *, unregister: bool) -> None:
        if self._starting is not None:
            await self._starting  # stopping half-way through start() would race it
            self._starting = None
        if self._agent is not None:
            await self._agent.stop(unregister=unregister)
            self._agent = None


async def _start(agent: RunningAgent) -> None:
    try:
        await agent.start()
    except Exception:  # the agent retries by itself; a start that raises is only logged
        log.exception("The failover agent failed to start.")


_STARTS = (Action.START, Action.RESTART, Action.RELOAD)
_STOPS = (Action.STOP, Action.RESTART, Action.RELOAD)


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
        Action.RELOAD: "failover settings reloaded for session {s} in {w} (still registered)",
    }
    return verbs[action].format(s=session_id, w=where)
