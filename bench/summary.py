"""The generated summary: every target of issue 16 against what was measured, with its verdict
(bench/verdicts.py) and the command that re-measures it. Pure functions of the results dict."""

from __future__ import annotations

from typing import Any

from . import verdicts
from .costfit import cost_figures
from .tables import Row, get, num, table

LEADER_VS_ETCD = 1.5  # heartbeats/s at the leader ≥ 1.5 × etcd's keep-alives at its leader
FOLLOWER_VS_ETCD = 1.0
HALF_LOAD_P99_MS = 10.0
CAPACITY_P99_MS = 50.0
KILL_WINDOW_S = 3.0


def section(results: dict[str, Any]) -> str:
    items = results["items"]
    rows = [
        *_throughput_rows(items.get("throughput")),
        *_capacity_rows(items.get("capacity")),
        *_failover_rows(items.get("failover")),
        *_leaderkill_rows(items.get("leaderkill")),
        *_cost_rows(items.get("costmodel")),
    ]
    if not rows:
        return ""
    sources = results.get("sources", {})
    runs = ", ".join(f"{k} {v}" for k, v in sources.items() if k in items)
    return (
        "## Summary: the targets of issue 16, production configuration\n\n"
        f"Generated from the results (runs: {runs}). A target met reads `met (margin×)`, a "
        "target missed `missed by N×` — the factor the measurement must improve by.\n\n"
        + table(["target", "measured", "verdict", "command"], rows)
    )


def _ok(item: dict[str, Any] | None) -> bool:
    return bool(item) and "error" not in item  # type: ignore[operator]


def ratio_row(
    what: str, ours: float | None, theirs: float | None, target: float, command: str
) -> Row:
    measured = ours / theirs if ours is not None and theirs else None
    text = (
        f"{num(ours)}/s vs etcd {num(theirs)}/s = {num(measured, 2)}×"
        if measured is not None
        else "–"
    )
    return [what, text, verdicts.at_least(measured, target), command]


def _throughput_rows(t: dict[str, Any] | None) -> list[Row]:
    if not t or not _ok(t):
        return []
    cmd = "`make bench BENCH=throughput`"
    rows = [
        ratio_row(
            f"heartbeats/s at the leader ≥ {LEADER_VS_ETCD} × etcd keep-alives at its leader",
            get(t, "cfs", "leader", "max", "rps"),
            get(t, "etcd", "leader", "max", "rps"),
            LEADER_VS_ETCD,
            cmd,
        ),
        ratio_row(
            f"through a follower ≥ {FOLLOWER_VS_ETCD} × etcd through a follower",
            get(t, "cfs", "follower", "max", "rps"),
            get(t, "etcd", "follower", "max", "rps"),
            FOLLOWER_VS_ETCD,
            cmd,
        ),
    ]
    for role in ("leader", "follower"):
        p99 = get(t, "cfs", role, "half_load", "p99_ms")
        rate = get(t, "cfs", role, "half_load", "target_rate")
        rows.append([
            f"p99 ≤ {num(HALF_LOAD_P99_MS)} ms at half of the maximum, {role}",
            f"p99 {num(p99, 1)} ms at {num(rate)}/s (open loop)",
            verdicts.at_most(p99, HALF_LOAD_P99_MS),
            cmd,
        ])  # fmt: skip
    return rows


def _capacity_rows(c: dict[str, Any] | None) -> list[Row]:
    if not c or not _ok(c):
        return []
    rows = []
    for key, label in (("standard", ""), ("stretch", "stretch: ")):
        run = c.get(key)
        if not run:
            continue
        rows.append(capacity_row(label, run, run["heartbeat_load"]))
        if "start_load" in run:
            rows.append(capacity_row(label, run, run["start_load"], MASS_START))
    return rows


STEADY = "steady state"
MASS_START = "mass start (the first T: every grant and confirmation a Raft write)"


def capacity_row(label: str, run: dict[str, Any], hb: dict[str, Any], phase: str = STEADY) -> Row:
    what = (
        f"{label}{num(run['sessions'])} sessions at T = {num(run['T_s'])} s, heartbeat every "
        f"T/2, open loop, {phase}: p99 ≤ {num(CAPACITY_P99_MS)} ms, zero errors"
    )
    measured = (
        f"{num(hb['achieved_rate'])}/s of {num(hb['target_rate'])}/s: p50 {num(hb['p50_ms'], 1)} "
        f"ms, p99 {num(hb['p99_ms'], 1)} ms, {num(hb['errors'])} errors"
    )
    verdict = verdicts.combine(
        verdicts.at_most(hb["p99_ms"], CAPACITY_P99_MS), verdicts.no_errors(hb["errors"])
    )
    command = "`make bench BENCH=capacity`" + (
        "" if label else ' (`BENCH_ARGS="--no-stretch"` for this row only)'
    )
    return [what, measured, verdict, command]


def _failover_rows(f: dict[str, Any] | None) -> list[Row]:
    if not f or not _ok(f):
        return []
    rows = []
    for system, key, label, bound_key in (
        ("cfs_agent", "agent_s", "failover, our agent: every trial ≤ T + 1 s", "T+1"),
        ("cfs", "answered_s", "failover, polling adapter: every trial ≤ T + T/2", "T+T/2"),
    ):
        s = get(f, system, key)
        trials = get(f, system, "trials")
        if not trials:
            continue  # not measured in this run
        if not s:
            rows.append([f"{label} (T = {num(f['T_s'])} s)", f"0 of {trials} trials failed over",
                         f"**missed**: {trials} of {trials} trials never got there",
                         "`make bench BENCH=failover`"])  # fmt: skip
            continue
        bound = f["bounds_s"][bound_key]
        measured = (
            f"median {num(s['median'], 2)} s, max {num(s['max'], 2)} s ({s['n']} of {trials})"
        )
        verdict = verdicts.at_most(s["max"], bound)
        if s["n"] < (trials or 0):
            verdict = f"**missed**: {trials - s['n']} trials never failed over"
        rows.append([f"{label} (T = {num(f['T_s'])} s)", measured, verdict,
                     "`make bench BENCH=failover`"])  # fmt: skip
    return rows


def _leaderkill_rows(k: dict[str, Any] | None) -> list[Row]:
    if not k or not _ok(k):
        return []
    changes = int(k["role_changes"])
    verdict = verdicts.combine(
        verdicts.at_most(k["failure_window_s"] or 0.0, KILL_WINDOW_S),
        "met (0 role changes)" if changes == 0 else f"missed: {changes} role changes",
    )
    return [
        [
            f"leader kill -9 under load: errors within ≤ {num(KILL_WINDOW_S)} s, no role change",
            f"{num(k['failed'])} failed within {num(k['failure_window_s'], 2)} s, "
            f"{changes} role changes",
            verdict,
            "`make bench BENCH=leaderkill`",
        ]
    ]


def _cost_rows(c: dict[str, Any] | None) -> list[Row]:
    """Issue 16 asks for a background cost per live session near zero and a constant cost per
    heartbeat, with no number: the fitted figures, without a verdict of our own making."""
    if not c or not _ok(c):
        return []
    rows = []
    for nodes, run in sorted(c["nodes"].items(), key=lambda kv: int(kv[0])):
        f = cost_figures(run)
        rows.append([
            f"cost model, {nodes} nodes: background per live session ≈ 0, per heartbeat constant",
            f"idle {num(f['idle_cpu_per_10k_sessions'], 1)} % of a core per 10,000 sessions; "
            f"{num(f['cpu_per_1k_heartbeats_per_s'], 1)} % per 1,000 heartbeats/s (sums over nodes)",
            "no numeric target: see the cost model",
            "`make bench BENCH=costmodel`",
        ])  # fmt: skip
    return rows
