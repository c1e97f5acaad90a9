"""One run: start the adapters out of phase, wait for the primaries, produce data, crash, stop."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from cfs_cluster.agent import AgentSettings, ClientRole
from cfs_cluster.simulator.adapters import SimAdapter, SimGroup, Sink
from cfs_cluster.simulator.report import summary
from cfs_cluster.simulator.settings import SETTLE_TIMEOUT_FACTOR, SimulationSettings

log = logging.getLogger("cfs.simulator")


async def run_simulation(settings: SimulationSettings) -> dict[str, Any]:
    """Run every mode side by side against the endpoints; return the summary."""
    sink = Sink()
    groups = _build_groups(settings, sink)
    adapters = [a for g in groups for a in g.adapters]
    count = max(1, int(settings.duration / settings.interval))
    started: list[SimAdapter] = []
    try:
        await _start(adapters, settings, started)
        await _settle(groups, settings.timeout)
        start = time.monotonic()
        for group in groups:
            group.primary_at_start = next((a.name for a in group.adapters if a.primary), None)
        work = [_produce(g, start, count, settings.interval) for g in groups]
        if settings.fail_primary_after is not None:
            work.append(_crash_primaries(groups, start + settings.fail_primary_after))
        await asyncio.gather(*work)
    finally:
        for adapter in adapters:
            adapter.retired = True
        await asyncio.gather(*(a.agent.stop() for a in started if not a.crashed))
    return summary(settings, groups, sink, start, count)


async def _start(
    adapters: list[SimAdapter], settings: SimulationSettings, started: list[SimAdapter]
) -> None:
    """Start every agent at a random moment within T/2, as independent processes would."""
    rng = random.Random(settings.run_id)

    async def one(adapter: SimAdapter, delay: float) -> None:
        await asyncio.sleep(delay)
        started.append(adapter)
        await adapter.agent.start()

    await asyncio.gather(*(one(a, rng.uniform(0, settings.timeout / 2)) for a in adapters))


def _build_groups(settings: SimulationSettings, sink: Sink) -> list[SimGroup]:
    groups = []
    for mode in settings.modes:
        for i in range(settings.groups):
            gid = f"sim-{settings.run_id}-{mode}-g{i + 1}"
            adapters = [
                SimAdapter(
                    gid, f"{gid}-a{j + 1}", mode, _agent_settings(settings, gid, mode, j), sink
                )
                for j in range(settings.adapters_per_group)
            ]
            groups.append(SimGroup(gid, mode, adapters))
    return groups


def _agent_settings(settings: SimulationSettings, gid: str, mode: str, index: int) -> AgentSettings:
    # Each adapter starts on a different node, as a fleet behind several URLs would.
    shift = index % len(settings.endpoints)
    endpoints = settings.endpoints[shift:] + settings.endpoints[:shift]
    return AgentSettings(
        endpoints=endpoints,
        group_id=gid,
        session_id=f"{gid}-a{index + 1}",
        failover_timeout=settings.timeout,
        mode=mode.capitalize(),
        username=settings.username,
        password=settings.password,
        verify_tls=settings.verify_tls,
        ca_file=settings.ca_file,
        request_timeout=max(1.0, min(5.0, settings.timeout / 2)),
    )


async def _settle(groups: list[SimGroup], timeout: float) -> None:
    """Data starts once every group has a primary, so start-up is not counted as a gap."""
    limit = SETTLE_TIMEOUT_FACTOR * timeout + 5

    async def one(group: SimGroup) -> None:
        waits = [a.agent.wait_for_role(ClientRole.Primary, limit) for a in group.adapters]
        tasks = [asyncio.ensure_future(w) for w in waits]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if not any(t.result() for t in done):
            log.warning("Group %s has no primary after %.0f s; starting anyway", group.id, limit)

    await asyncio.gather(*(one(g) for g in groups))


async def _produce(group: SimGroup, start: float, count: int, interval: float) -> None:
    for seq in range(count):
        delay = start + seq * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # the data rate itself, not a synchronisation
        now = time.time()
        for adapter in group.adapters:
            adapter.observe(seq, now)


async def _crash_primaries(groups: list[SimGroup], when: float) -> None:
    await asyncio.sleep(max(0.0, when - time.monotonic()))
    crashes = []
    for group in groups:
        primary = next((a for a in group.adapters if a.primary), None)
        if primary is None:
            log.warning("Group %s has no primary to crash", group.id)
            continue
        group.crashed, group.crashed_at = primary.name, time.monotonic()
        crashes.append(primary.crash())
    await asyncio.gather(*crashes)
