"""The summary of a run (per mode, per group) and its human-readable table."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from typing import Any

from cfs_cluster.protocol.wire import TICKS_PER_SECOND, format_timespan
from cfs_cluster.simulator.adapters import SimGroup, Sink
from cfs_cluster.simulator.settings import SimulationSettings
from cfs_cluster.simulator.stats import continuity, spread, takeovers


def summary(
    settings: SimulationSettings, groups: list[SimGroup], sink: Sink, start: float, count: int
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


def _group_figures(group: SimGroup, sink: Sink, start: float, count: int) -> dict[str, Any]:
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
