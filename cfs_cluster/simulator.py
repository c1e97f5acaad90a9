"""`cfs simulate`: many emulated adapters in one process, measuring data continuity.

Each group has one data source producing a sequence-numbered value every ``interval`` seconds
(one per second by default). Every adapter of the group sees every value, as redundant
collectors reading one device do; only the adapter whose agent holds the Primary grant sends
values to the sink, which the simulator owns and counts. Per mode (spec §4.6):

- hot: secondaries collect into a HotBuffer, trimmed with the group's LastDataProcessedTime
  minus T/2; on promotion they flush it, so a primary crash costs duplicates, not gaps;
- warm / cold: secondaries do not collect; a promoted adapter starts with the next value, so the
  values produced during the takeover are lost (cold also starts from a standby score of 1).

Adapters start at random moments within the first T/2, so their heartbeats are out of phase as
in a real fleet and the takeover times spread over what a crash at a random moment costs.
``--fail-primary-after`` crashes each group's primary at that moment: its agent stops without
unregistering, like a killed process. The summary reports, per mode, failovers (the Primary role
moving to another adapter), takeover time (crash to the next adapter's Primary grant), gaps
(sequence numbers the sink never received) and duplicates (deliveries beyond the first), all
counted from the sink and the adapters' role changes, never assumed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import random
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .agent import AgentSettings, ClientRole, FailoverAgent, HotBuffer, RoleChange
from .errors import BadRequest
from .wire import TICKS_PER_SECOND, format_timespan, parse_timespan

__all__ = [
    "Continuity",
    "RoleEvent",
    "SimulationSettings",
    "Takeovers",
    "add_simulate_arguments",
    "continuity",
    "format_report",
    "run_simulation",
    "simulate_command",
    "spread",
    "takeovers",
]

log = logging.getLogger("cfs.simulator")

MODES = ("hot", "warm", "cold")
SETTLE_TIMEOUT_FACTOR = 3.0  # wait up to 3 T (+5 s) for every group's first primary
MIN_TIMEOUT = 1.0  # the service refuses a FailoverTimeout below 00:00:01


# --------------------------------------------------------------------------- pure figures


@dataclass(frozen=True)
class Continuity:
    """What reached the sink out of ``produced`` values numbered 0 … produced-1."""

    produced: int
    delivered: int
    gaps: int
    duplicates: int
    missing: tuple[int, ...]


def continuity(produced: int, counts: Mapping[int, int]) -> Continuity:
    """Gaps = sequence numbers never delivered; duplicates = deliveries beyond the first."""
    missing = tuple(seq for seq in range(produced) if counts.get(seq, 0) == 0)
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    delivered = sum(1 for seq in range(produced) if counts.get(seq, 0) > 0)
    return Continuity(produced, delivered, len(missing), duplicates, missing)


def spread(values: Sequence[float]) -> dict[str, float | None]:
    """Median and maximum, rounded to milliseconds (None when there are no values)."""
    if not values:
        return {"median": None, "max": None}
    median, top = float(statistics.median(values)), float(max(values))
    return {"median": round(median, 3), "max": round(top, 3)}


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class SimulationSettings:
    endpoints: tuple[str, ...]
    groups: int = 1
    adapters_per_group: int = 2
    modes: tuple[str, ...] = ("hot",)
    timeout: float = 15.0  # FailoverTimeout T, seconds
    duration: float = 60.0  # seconds of data production
    fail_primary_after: float | None = None  # seconds after production starts
    interval: float = 1.0  # seconds between values of one group
    username: str | None = None
    password: str | None = None
    verify_tls: bool = True
    ca_file: str | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def __post_init__(self) -> None:
        if self.groups < 1 or self.adapters_per_group < 1:
            raise ValueError("--groups and --adapters-per-group must be at least 1.")
        for mode in self.modes:
            if mode not in MODES:
                raise ValueError(f"--mode '{mode}' is not one of {', '.join(MODES)}.")
        if not self.endpoints:
            raise ValueError("--endpoint: at least one failover endpoint URL is required.")
        if not self.timeout >= MIN_TIMEOUT:
            raise ValueError(f"--timeout must be at least {MIN_TIMEOUT:g} s (00:00:01).")
        if not self.duration > 0 or not self.interval > 0:
            raise ValueError("--duration and --interval must be positive.")
        if self.fail_primary_after is not None and not (
            0 <= self.fail_primary_after < self.duration
        ):
            raise ValueError("--fail-primary-after must be from 0 to less than --duration.")


# --------------------------------------------------------------------------- the adapters


class Sink:
    """The data endpoint: how often each (group, sequence number) arrived."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter[int]] = {}

    def write(self, group: str, seq: int) -> None:
        self.counts.setdefault(group, Counter())[seq] += 1


@dataclass(frozen=True)
class RoleEvent:
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
        self.history: list[RoleEvent] = []  # role changes while alive and not retired
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
        event = RoleEvent(time.monotonic(), self.name, change.old, change.new, change.reason)
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


# --------------------------------------------------------------------------- one run


@dataclass
class _Group:
    id: str
    mode: str
    adapters: list[SimAdapter]
    primary_at_start: str | None = None  # the adapter holding Primary when data started
    crashed: str | None = None  # the adapter crashed by --fail-primary-after
    crashed_at: float | None = None


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
    return _summary(settings, groups, sink, start, count)


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


def _build_groups(settings: SimulationSettings, sink: Sink) -> list[_Group]:
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
            groups.append(_Group(gid, mode, adapters))
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


async def _settle(groups: list[_Group], timeout: float) -> None:
    """Data starts once every group has a primary, so start-up is not counted as a gap."""
    limit = SETTLE_TIMEOUT_FACTOR * timeout + 5

    async def one(group: _Group) -> None:
        waits = [a.agent.wait_for_role(ClientRole.Primary, limit) for a in group.adapters]
        tasks = [asyncio.ensure_future(w) for w in waits]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if not any(t.result() for t in done):
            log.warning("Group %s has no primary after %.0f s; starting anyway", group.id, limit)

    await asyncio.gather(*(one(g) for g in groups))


async def _produce(group: _Group, start: float, count: int, interval: float) -> None:
    for seq in range(count):
        delay = start + seq * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # the data rate itself, not a synchronisation
        now = time.time()
        for adapter in group.adapters:
            adapter.observe(seq, now)


async def _crash_primaries(groups: list[_Group], when: float) -> None:
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


# --------------------------------------------------------------------------- summary


def _summary(
    settings: SimulationSettings, groups: list[_Group], sink: Sink, start: float, count: int
) -> dict[str, Any]:
    modes = {}
    for mode in settings.modes:
        mine = [g for g in groups if g.mode == mode]
        per_group = [_group_figures(g, sink, start, count) for g in mine]
        takeovers = [p["takeover_seconds"] for p in per_group if p["takeover_seconds"] is not None]
        crashed = [p for p in per_group if p["crashed"] is not None]
        modes[mode] = {
            "groups": len(mine),
            "crashes": len(crashed),
            "failovers": sum(p["failovers"] for p in per_group),
            "takeover_seconds": spread(takeovers),
            "no_takeover": sum(1 for p in crashed if p["takeover_seconds"] is None),
            "demotions": sum(p["demotions"] for p in per_group),
            "values_per_group": count,
            "gaps": sum(p["gaps"] for p in per_group),
            "gaps_per_group": spread([p["gaps"] for p in per_group]),
            "duplicates": sum(p["duplicates"] for p in per_group),
            "per_group": per_group,
        }
    ticks = round(settings.timeout * TICKS_PER_SECOND)
    return {
        "run": settings.run_id,
        "settings": {
            "endpoints": list(settings.endpoints),
            "groups": settings.groups,
            "adapters_per_group": settings.adapters_per_group,
            "modes": list(settings.modes),
            "timeout": format_timespan(ticks),
            "duration": settings.duration,
            "interval": settings.interval,
            "fail_primary_after": settings.fail_primary_after,
        },
        "modes": modes,
    }


@dataclass(frozen=True)
class Takeovers:
    """What one group's role changes during the data say."""

    failovers: int  # the Primary role moved to another adapter
    demotions: int  # a live primary lost the role (grant lapse, answered Secondary)
    takeover_seconds: float | None  # crash to another adapter's Primary grant


def takeovers(
    events: Sequence[RoleEvent],
    primary_at_start: str | None,
    crashed: str | None = None,
    crashed_at: float | None = None,
) -> Takeovers:
    """Count failovers and demotions in ``events`` (live adapters' role changes, any order).

    A crash records no event: the crashed adapter just stops. A promotion of the adapter that
    already held the role (after a lapse) is a demotion and a re-grant, not a failover.
    """
    holder, failovers, demotions = primary_at_start, 0, 0
    takeover: float | None = None
    for event in sorted(events, key=lambda e: e.at):
        if event.new == ClientRole.Primary:
            if holder is not None and event.adapter != holder:
                failovers += 1
            holder = event.adapter
            first = takeover is None and event.adapter != crashed
            if first and crashed_at is not None and event.at >= crashed_at:
                takeover = round(event.at - crashed_at, 3)
        elif event.old == ClientRole.Primary:
            demotions += 1
    return Takeovers(failovers, demotions, takeover)


def _group_figures(group: _Group, sink: Sink, start: float, count: int) -> dict[str, Any]:
    """One group's figures: continuity from the sink, failovers from the role changes."""
    figures = continuity(count, sink.counts.get(group.id, Counter()))
    events = [e for a in group.adapters for e in a.history if e.at >= start]
    roles = takeovers(events, group.primary_at_start, group.crashed, group.crashed_at)
    result = asdict(figures)
    result["missing"] = list(figures.missing[:50])  # the first few are enough to read
    return {"group": group.id, "crashed": group.crashed, **asdict(roles), **result}


def format_report(summary: dict[str, Any]) -> str:
    """The human-readable table printed without --json."""
    s = summary["settings"]
    crash = s["fail_primary_after"]
    lines = [
        f"cfs simulate: {s['groups']} group(s) x {s['adapters_per_group']} adapter(s) per mode, "
        f"T={s['timeout']}, {s['duration']:g} s of data, one value per {s['interval']:g} s, "
        f"primary crash at {'never' if crash is None else f'{crash:g} s'}",
        f"{'mode':<6}{'values':>8}{'crashes':>9}{'failovers':>11}{'takeover median/max s':>24}"
        f"{'gaps':>7}{'gaps/group med/max':>20}{'duplicates':>12}{'demotions':>11}",
    ]
    for mode, m in summary["modes"].items():
        t, g = m["takeover_seconds"], m["gaps_per_group"]
        takeover = "-" if t["median"] is None else f"{t['median']:.2f} / {t['max']:.2f}"
        per_group = "-" if g["median"] is None else f"{g['median']:g} / {g['max']:g}"
        lines.append(
            f"{mode:<6}{m['values_per_group'] * m['groups']:>8}{m['crashes']:>9}"
            f"{m['failovers']:>11}{takeover:>24}{m['gaps']:>7}{per_group:>20}"
            f"{m['duplicates']:>12}{m['demotions']:>11}"
        )
        if m["no_takeover"]:
            lines.append(
                f"      {m['no_takeover']} crashed group(s) had no takeover before the end"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def add_simulate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint", required=True, help="failover endpoint URL(s), comma-separated")
    p.add_argument("--groups", type=int, default=1, help="failover groups per mode")
    p.add_argument("--adapters-per-group", type=int, default=2)
    p.add_argument(
        "--mode", default="hot", help="hot|warm|cold, or several comma-separated (run side by side)"
    )
    p.add_argument("--timeout", default="00:00:15", help="FailoverTimeout, hh:mm:ss or seconds")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of data")
    p.add_argument(
        "--fail-primary-after", type=float, default=None, help="seconds; crash primaries"
    )
    p.add_argument("--interval", type=float, default=1.0, help="seconds between values")
    p.add_argument("--username", default=None)
    p.add_argument("--password", default=None)
    p.add_argument(
        "--cacert",
        default=os.environ.get("CFS_CACERT"),
        help="PEM CA (or node certificate) to verify the nodes with [CFS_CACERT]",
    )
    p.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--verbose", action="store_true", help="log every role change to stderr")


def simulate_command(args: argparse.Namespace) -> int:
    settings = _settings_from_args(args)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    summary = asyncio.run(run_simulation(settings))
    print(json.dumps(summary, indent=2) if args.json else format_report(summary))
    return 0


def _settings_from_args(args: argparse.Namespace) -> SimulationSettings:
    endpoints = tuple(e.strip() for e in args.endpoint.split(",") if e.strip())
    try:
        return SimulationSettings(
            endpoints=endpoints,
            groups=args.groups,
            adapters_per_group=args.adapters_per_group,
            modes=tuple(m.strip().lower() for m in args.mode.split(",") if m.strip()),
            timeout=_parse_timeout(args.timeout),
            duration=args.duration,
            fail_primary_after=args.fail_primary_after,
            interval=args.interval,
            username=args.username,
            password=args.password,
            verify_tls=not args.insecure,
            ca_file=args.cacert,
        )
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc


def _parse_timeout(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return parse_timespan(text, "--timeout") / TICKS_PER_SECOND
