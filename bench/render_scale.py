"""The capacity and cost-model sections and "where the time goes": pure functions of results."""

from __future__ import annotations

from typing import Any

from . import summary
from .costfit import cost_figures
from .tables import Row, config_block, get, num, table


def capacity(c: dict[str, Any], source: str) -> str:
    if "standard" not in c:
        return f"## 2. Capacity (run {source})\n\nAn older result format: re-run it.\n"
    text = (
        f"## 2. Capacity: sessions at T, each heartbeating every T/2, open loop (run {source})\n\n"
    )
    for key in ("standard", "stretch"):
        run = c.get(key)
        if run:
            text += _capacity_run(run, "stretch: " if key == "stretch" else "")
    return text


def _capacity_run(run: dict[str, Any], label: str) -> str:
    hb = run["heartbeat_load"]
    start = run.get("start_load")
    rows = [summary.capacity_row(label, run, hb)]
    if start is not None:
        rows.append(summary.capacity_row(label, run, start, summary.MASS_START))
    text = f"### {label}{num(run['sessions'])} sessions at T = {num(run['T_s'])} s\n\n"
    text += config_block([("cfs", run.get("config"))])
    text += (
        f"{num(run['groups'])} groups × 2 sessions registered through the API in "
        f"{run['register_seconds']} s ({num(run['register_writes_per_s'])} Raft writes/s). Then "
        f"the open-loop client (bench/httpload.py, {run.get('connections', '?')} connections "
        "over all nodes, latency from each request's due time) sends every session's heartbeat "
        "every T/2: first the mass start, the first T (every group's first heartbeat grants "
        "its primary and the holder's next one confirms it: a Raft write each), then the "
        f"steady state, measured for {num(run['measured_s'])} s.\n\n"
    )
    if start is None:
        warm = run.get("warmup_load", {})
        text += (
            f"(This run's warm-up was T/2 and is not a measurement: p99 "
            f"{num(warm.get('p99_ms'), 1)} ms, {num(warm.get('errors'))} errors.)\n\n"
        )
    text += table(["target", "measured", "verdict"], [row[:3] for row in rows])
    statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(run.get("statuses", {}).items()))
    text += f"\nStatuses in the measured window: {statuses}. p90 {num(hb['p90_ms'], 1)} ms, "
    text += f"max {num(hb['max_ms'], 1)} ms.\n\n"
    nodes = [f"n{i + 1}" for i in range(len(run["rss_mb_held"]))]
    disk = run.get("disk_bytes", {})
    rows = [
        [n, num(run["rss_mb_empty"][i], 1), num(run["rss_mb_held"][i], 1),
         num(run["cpu_pct_heartbeating"][i], 1),
         num(sum(disk.get(n, {}).values()) / 1e6, 2) if disk else "–"]
        for i, n in enumerate(nodes)
    ]  # fmt: skip
    text += table(
        ["node", "RSS empty (MB)", "RSS held (MB)", "CPU % heartbeating", "disk (MB)"], rows
    )
    if "restart_to_ready_s" in run:
        text += (
            f"\nRestart of the whole cluster (SIGTERM all, start all) to every node ready: "
            f"**{run['restart_to_ready_s']} s**; groups after restart: "
            f"{num(run['groups_after_restart'])}.\n"
        )
    return text + "\n"


# ---------------------------------------------------------------------- cost model


def _cost_rows(points: list[dict[str, Any]], key: str) -> list[Row]:
    return [
        [num(p[key]), num(p["achieved_rate"]), num(p["p50_ms"], 1), num(p["p99_ms"], 1),
         num(p["errors"]), " / ".join(num(x) for x in p["idle_cpu_pct"]),
         " / ".join(num(x) for x in p["cpu_pct"]), num(sum(p["cpu_pct"])),
         num(max(p.get("rss_mb", [0])), 0), _first_window(p)]
        for p in points
    ]  # fmt: skip


def _first_window(p: dict[str, Any]) -> str:
    first = p.get("first_window")
    if not first:
        return "–"
    return (
        f"p99 {num(first['p99_ms'], 1)} ms, {num(first['errors'])} errors, "
        f"CPU sum {num(sum(first['cpu_pct']))}"
    )


COST_HEADER = ["heartbeats/s done", "p50 (ms)", "p99 (ms)", "errors", "CPU % idle per node",
               "CPU % loaded per node", "CPU % loaded, sum", "max RSS (MB)",
               "first window after the new sessions"]  # fmt: skip


def costmodel(c: dict[str, Any], source: str) -> str:
    text = (
        f"## 7. Cost model (run {source})\n\n"
        f"Every session heartbeated once before it counts (so it is live) and T = {c['T']}, so "
        f"nobody expires. Per point: CPU per node from /proc over {num(c['idle_seconds'])} s "
        f"idle, then over {num(c['load_seconds'])} s of open-loop heartbeats (bench/httpload.py) "
        "cycling through every session, spread over all nodes. 100 % = one core.\n\n"
    )
    for nodes, run in sorted(c["nodes"].items(), key=lambda kv: int(kv[0])):
        text += f"### {nodes} nodes\n\n" + config_block([("cfs", run.get("config"))])
        figures = cost_figures(run)
        text += (
            f"Fitted: idle CPU **{num(figures['idle_cpu_per_10k_sessions'], 1)} % per 10,000 live "
            f"sessions** (summed over nodes), loaded CPU {num(figures['loaded_cpu_per_10k_sessions'], 1)} "
            f"% per 10,000 sessions at {num(c['rate'])}/s, and **{num(figures['cpu_per_1k_heartbeats_per_s'], 1)} "
            "% per 1,000 heartbeats/s** (loaded minus idle, summed over nodes).\n\n"
        )
        if run.get("by_sessions"):
            text += f"Against the number of sessions, {num(c['rate'])} heartbeats/s:\n\n"
            text += table(["sessions", *COST_HEADER], _cost_rows(run["by_sessions"], "sessions"))
        if run.get("by_rate"):
            text += f"\nAgainst the heartbeat rate, {num(c['fixed_sessions'])} sessions:\n\n"
            text += table(["rate (target)", *COST_HEADER], _cost_rows(run["by_rate"], "rate"))
        text += "\n"
    return text


# ---------------------------------------------------------------------- profiles

PROFILES = (
    ("capacity", ("standard", "profile_leader"), "leader, the capacity load (open loop)"),
    ("capacity", ("stretch", "profile_leader"), "leader, the stretch capacity load (open loop)"),
    ("throughput", ("cfs", "profile_leader"), "leader, wrk at its maximum"),
    ("throughput", ("cfs", "profile_follower"), "follower, wrk at its maximum"),
    ("throughput", ("cfs", "profile_leader_via_follower"), "leader, heartbeats relayed"),
)


def where_the_time_goes(items: dict[str, Any]) -> str:
    """Per py-spy profile of the production configuration: samples by layer, then the top
    functions. Percentages are of all samples of all threads of the process."""
    text = ""
    for item, keys, title in PROFILES:
        prof = get(items.get(item) or {}, *keys)
        if not prof or not prof.get("samples"):
            continue
        text += (
            f"\n### {title} ({num(prof['samples'])} samples, bench/results/{prof.get('file')})\n\n"
        )
        if prof.get("areas"):
            text += table(
                ["layer (nearest frame from the sample)", "% of samples"],
                [[a["function"], num(a["pct"], 1)] for a in prof["areas"]],
            )
            text += "\n"
        rows = [
            [f"`{s['function']}`", num(s["pct"], 1), f"`{i['function']}`", num(i["pct"], 1)]
            for s, i in zip(prof["self"][:12], prof["inclusive"][:12], strict=False)
        ]
        text += table(["own time", "%", "inclusive", "%"], rows)
    if not text:
        return ""
    return (
        "## Where the time goes (py-spy, production configuration)\n\n"
        "`py-spy record --rate 250 --nonblocking` on one node while the load runs; each sample is "
        "attributed to the nearest frame of a known layer, walking from the sampled function "
        "towards the root (bench/measure.py `AREAS`).\n" + text
    )
