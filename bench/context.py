"""What every benchmark item is given (the Context) and the measuring steps they share."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import httpload, measure, systems

COST_SESSIONS = (1_000, 5_000, 20_000, 50_000, 100_000)
COST_RATES = (250, 500, 1_000, 2_000)


@dataclass
class Context:
    work: Path  # scratch directory for data dirs and logs
    results: Path  # where profiles are kept
    duration: float = 10.0  # seconds per wrk / fixed-rate run
    groups: int = 2500  # groups × 2 sessions cycled by the load generator (throughput)
    capacity_groups: int = 10_000  # 20,000 sessions at T = 15 s (issue 16's check)
    capacity_seconds: float = 30.0  # the measured window, after a warm-up of T/2
    capacity_connections: int = 128  # open-loop connections over all nodes
    stretch: bool = True  # also 100,000 sessions at T = 60 s
    trials: int = 24
    dev: bool = True  # also measure `serve --dev` (the labelled extra column)
    cost_sessions: tuple[int, ...] = COST_SESSIONS
    cost_rates: tuple[int, ...] = COST_RATES
    cost_rate: int = 500  # heartbeats/s while the number of sessions varies
    cost_fixed_sessions: int = 5_000  # sessions while the heartbeat rate varies
    cost_nodes: tuple[int, ...] = (3, 5)
    profiles: dict[str, Any] = field(default_factory=dict)


def max_and_half(
    port: int,
    requests: list[httpload.Request],
    ctx: Context,
    pids: list[int],
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """wrk maximum (with CPU% per process), then the fixed-rate client at half of it."""
    window = measure.CpuWindow(pids).start()
    maximum = measure.wrk(port, requests, ctx.duration, headers=headers)
    maximum["cpu_pct"] = window.stop()
    rate = max(maximum["rps"] / 2, 50)
    half = httpload.run(
        httpload.fixed_rate([("127.0.0.1", port)], requests, rate, ctx.duration, headers=headers)
    )
    assert isinstance(half, httpload.RateResult)
    return {"max": maximum, "half_load": half.summary()}


def profile_while(pid: int, ctx: Context, name: str, load: Any) -> dict[str, Any]:
    """py-spy on ``pid`` for ``ctx.duration`` while ``load()`` runs (it returns a dict)."""
    out = ctx.results / f"{name}.pyspy.txt"
    spy = measure.profile_start(pid, ctx.duration, out)
    if spy is None:
        return {"error": "py-spy not installed"}
    time.sleep(0.5)  # py-spy attaches
    loaded = load()
    spy.wait(timeout=ctx.duration + 30)
    summary = measure.summarize_profile(out)
    if isinstance(loaded, dict) and "rps" in loaded:
        summary["rps_while_profiled"] = loaded["rps"]
    summary["file"] = out.name
    return summary


def wrk_profile(
    cluster: systems.CfsCluster,
    profiled: int,
    driven: int,
    requests: list[httpload.Request],
    ctx: Context,
    name: str,
) -> dict[str, Any]:
    """Profile node ``profiled`` while wrk drives node ``driven`` (the same node or not)."""
    return profile_while(
        cluster.pids()[profiled],
        ctx,
        name,
        lambda: measure.wrk(
            cluster.port(driven), requests, ctx.duration - 1, headers=cluster.headers
        ),
    )
