"""The cost model's fit: CPU per live session and per heartbeat from the measured points."""

from __future__ import annotations

from typing import Any


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys against xs; None with fewer than two distinct xs."""
    if len(xs) < 2 or len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


def cost_figures(run: dict[str, Any]) -> dict[str, float | None]:
    """Background CPU per 10,000 live sessions (idle, summed over nodes) and CPU per 1,000
    heartbeats/s (loaded minus idle, summed over nodes), both in % of one core."""
    by_sessions, by_rate = run.get("by_sessions", []), run.get("by_rate", [])
    background = slope(
        [p["sessions"] / 10_000 for p in by_sessions], [sum(p["idle_cpu_pct"]) for p in by_sessions]
    )
    per_heartbeat = slope(
        [p["rate"] / 1_000 for p in by_rate],
        [sum(p["cpu_pct"]) - sum(p["idle_cpu_pct"]) for p in by_rate],
    )
    load_per_session = slope(
        [p["sessions"] / 10_000 for p in by_sessions], [sum(p["cpu_pct"]) for p in by_sessions]
    )
    return {
        "idle_cpu_per_10k_sessions": background,
        "loaded_cpu_per_10k_sessions": load_per_session,
        "cpu_per_1k_heartbeats_per_s": per_heartbeat,
    }
