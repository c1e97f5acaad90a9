"""The emulated adapters: a FailoverAgent each, the data path of its mode, and the counting sink."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from dataclasses import dataclass

from cfs_cluster.agent import AgentSettings, ClientRole, FailoverAgent, HotBuffer, RoleChange

log = logging.getLogger("cfs.simulator")


class Sink:
    """The data endpoint: how often each (group, sequence number) arrived."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter[int]] = {}

    def write(self, group: str, seq: int) -> None:
        self.counts.setdefault(group, Counter())[seq] += 1


@dataclass(frozen=True)
class AdapterRoleChange:
    """A live adapter's local role changed (monotonic time)."""

    at: float
    adapter: str
    old: ClientRole
    new: ClientRole
    reason: str


class SimAdapter:
    """One emulated adapter: a FailoverAgent plus the data path of its mode."""

    def __init__(self, group: str, name: str, mode: str, agent_settings: AgentSettings, sink: Sink):
        self.group, self.name, self.mode, self.sink = group, name, mode, sink
        self.buffer: HotBuffer[int] = HotBuffer(margin=agent_settings.failover_timeout / 2)
        self.collecting = False
        self.crashed = False
        self.retired = False  # the run is over: hand-overs while stopping are not failovers
        self.history: list[AdapterRoleChange] = []  # role changes while alive and not retired
        self.agent = FailoverAgent(
            agent_settings, score=self._score, on_role_change=self._on_role_change
        )

    @property
    def primary(self) -> bool:
        return self.agent.role == ClientRole.Primary and not self.crashed

    def _score(self) -> float:
        standby = self.mode == "cold" and self.agent.role != ClientRole.Primary
        return 1.0 if standby else 100.0

    def _on_role_change(self, change: RoleChange) -> None:
        if self.crashed or self.retired:
            return
        event = AdapterRoleChange(
            time.monotonic(), self.name, change.old, change.new, change.reason
        )
        self.history.append(event)
        log.info(
            "%s: %s -> %s, epoch %s (%s)",
            self.name,
            change.old.name,
            change.new.name,
            change.epoch,
            change.reason,
        )
        if change.new == ClientRole.Primary:
            self._take_over()
        elif change.old == ClientRole.Primary:
            self.collecting = False  # warm/cold stop sampling; hot goes back to buffering

    def _take_over(self) -> None:
        self.collecting = True
        if self.mode != "hot":
            return  # warm/cold start collecting with the next value
        # The adjusted LDPT may be older than what the old primary really sent: duplicates.
        self.buffer.margin = self.agent.failover_timeout / 2  # the server's T if it differed
        for processed_at, seq in self.buffer.promote(self._server_ldpt()):
            self._egress(seq, processed_at)

    def _server_ldpt(self) -> float | None:
        when = self.agent.server_last_data_processed
        return None if when is None else when.timestamp()

    def observe(self, seq: int, processed_at: float) -> None:
        """A new value from the data source."""
        if self.crashed:
            return
        primary = self.agent.role == ClientRole.Primary
        if primary and self.collecting:
            self._egress(seq, processed_at)
        elif self.mode == "hot" and not primary:
            self.buffer.add(processed_at, seq)
            self.buffer.margin = self.agent.failover_timeout / 2
            self.buffer.trim(self._server_ldpt())

    def _egress(self, seq: int, processed_at: float) -> None:
        self.sink.write(self.group, seq)
        self.agent.report_data_processed(dt.datetime.fromtimestamp(processed_at, dt.UTC))

    async def crash(self) -> None:
        """Stop like a killed process: no unregister, no more data."""
        self.crashed = True
        log.info("%s: crashed (no unregister)", self.name)
        await self.agent.stop(unregister=False)


@dataclass
class SimGroup:
    """One failover group of a run: its adapters and what happened to its primary."""

    id: str
    mode: str
    adapters: list[SimAdapter]
    primary_at_start: str | None = None  # the adapter holding Primary when data started
    crashed: str | None = None  # the adapter crashed by --fail-primary-after
    crashed_at: float | None = None
