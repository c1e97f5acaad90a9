"""Tables and plots for docs/benchmarks.md: pure functions of the results dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

Row = list[str]


def table(header: Row, rows: list[Row]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}"
    return str(value)


def ratio(a: Any, b: Any) -> str:
    try:
        return f"{a / b:.2f}×"
    except (TypeError, ZeroDivisionError):
        return "–"


def _get(data: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


# ---------------------------------------------------------------------- markdown


def markdown(results: dict[str, Any], images: list[str]) -> str:
    items = results["items"]
    parts = [_machine(results)]
    sections = {
        "throughput": _throughput,
        "capacity": _capacity,
        "failover": _failover,
        "leaderkill": _leaderkill,
        "reads": _reads,
        "durability": _durability,
    }
    for name, render in sections.items():
        if name in items:
            source = results.get("sources", {}).get(name, "?")
            if "error" in items[name]:
                parts.append(f"## {name}\n\nFailed in run {source}: `{items[name]['error']}`\n")
            else:
                parts.append(render(items[name], source))
    parts += [f"![{Path(i).stem}]({i})\n" for i in images]
    return "\n".join(parts)


def _machine(results: dict[str, Any]) -> str:
    m = results["machine"]
    return (
        f"Machine: {m.get('cpus')} CPUs ({m.get('cpu')}), Python {m.get('python')}, "
        f"kernel {m.get('kernel')}, {m.get('wrk')}, {m.get('etcd')}.\n"
    )


def _throughput(t: dict[str, Any], source: str) -> str:
    cfs, etcd, echo = t.get("cfs", {}), t.get("etcd", {}), t.get("echo", {})
    rows = []
    for label, data, peer in (
        ("cfs heartbeat, at the leader", _get(cfs, "leader"), _get(etcd, "leader")),
        ("cfs heartbeat, through a follower", _get(cfs, "follower"), _get(etcd, "follower")),
        ("etcd lease keep-alive, at the leader", _get(etcd, "leader"), None),
        ("etcd lease keep-alive, through a follower", _get(etcd, "follower"), None),
        ("raw ASGI echo (uvicorn, uvloop + httptools)", echo, None),
    ):
        if not data:
            continue
        mx, half = data["max"], data["half_load"]
        rows.append([
            label,
            num(mx["rps"]),
            ratio(mx["rps"], _get(peer, "max", "rps")) if peer else "",
            num(mx.get("p99_ms"), 1),
            num(half["target_rate"]),
            num(half["p50_ms"], 2),
            num(half["p99_ms"], 2),
            str(mx["non_2xx"] + half["errors"]),
            " / ".join(num(c) for c in mx.get("cpu_pct", [])),
        ])  # fmt: skip
    text = f"## 1 + 5. Heartbeat throughput and latency (run {source})\n\n"
    text += (
        f"{num(cfs.get('sessions'))} registered cfs sessions and {num(etcd.get('leases'))} etcd "
        "leases, cycled by the load generator. Maximum: `wrk -t1 -c32` (closed loop, keep-alive, "
        "bench/wrk_cycle.lua). Half load: an open-loop asyncio client (bench/httpload.py, 32 "
        "connections) at half the maximum, latency measured from each request's due time.\n\n"
    )
    text += table(
        ["system / path", "max req/s", "ours/etcd", "p99 at max (ms)", "half-load rate",
         "p50 (ms)", "p99 (ms)", "errors", "CPU % per process at max"],
        rows,
    )  # fmt: skip
    text += _profile_section(cfs)
    return text


def _profile_section(cfs: dict[str, Any]) -> str:
    text = ""
    for key, title in (
        ("profile_leader", "leader, heartbeats sent to the leader"),
        ("profile_follower", "follower, heartbeats sent to the follower"),
        ("profile_leader_via_follower", "leader, heartbeats relayed by a follower"),
    ):
        prof = cfs.get(key)
        if not prof or not prof.get("samples"):
            continue
        text += f"\n### py-spy: {title} ({num(prof['samples'])} samples, bench/results/{prof.get('file')})\n\n"
        rows = [
            [f"`{s['function']}`", num(s["pct"], 1), f"`{i['function']}`", num(i["pct"], 1)]
            for s, i in zip(prof["self"][:15], prof["inclusive"][:15], strict=False)
        ]
        text += table(["own time", "%", "inclusive", "%"], rows)
    return text


def _capacity(c: dict[str, Any], source: str) -> str:
    nodes = [f"n{i + 1}" for i in range(len(c["rss_mb_held"]))]
    rows = [
        [n, num(c["rss_mb_empty"][i], 1), num(c["rss_mb_held"][i], 1), num(c["cpu_pct_idle"][i], 1),
         num(c["cpu_pct_heartbeating"][i], 1), num(sum(c["disk_bytes"].get(n, {}).values()) / 1e6, 2),
         ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in c["disk_bytes"].get(n, {}).items())]
        for i, n in enumerate(nodes)
    ]  # fmt: skip
    hb = c["heartbeat_load"]
    return (
        f"## 2. Capacity: {num(c['groups'])} groups × 2 sessions at T = 15 s (run {source})\n\n"
        f"Registered through the API in {c['register_seconds']} s "
        f"({num(c['register_writes_per_s'])} Raft writes/s). Then every session heartbeats every "
        f"T/2 = 7.5 s, spread over the three nodes: {num(hb['achieved_rate'])} heartbeats/s, "
        f"p50 {hb['p50_ms']} ms, p99 {hb['p99_ms']} ms, {hb['errors']} errors.\n\n"
        + table(
            [
                "node",
                "RSS empty (MB)",
                "RSS held (MB)",
                "CPU % idle",
                "CPU % heartbeating",
                "disk (MB)",
                "files",
            ],
            rows,
        )  # fmt: skip
        + f"\nRestart of the whole cluster (SIGTERM all, start all) to every node ready: "
        f"**{c['restart_to_ready_s']} s**; groups after restart: {num(c['groups_after_restart'])}.\n"
    )


# (system key, timing key, system label, what is measured, which bound applies)
FAILOVER_ROWS = (
    ("cfs", "answered_s", "cfs", "polling adapter (commercial protocol): its heartbeat every "
     "T/2 is answered Primary", "T+T/2"),
    ("cfs_agent", "agent_s", "cfs", "our agent (FailoverAgent, role long-poll + heartbeat): "
     "role-change callback reports Primary", "T+1"),
    ("cfs", "decided_s", "cfs", "status names b Primary (GET status polled every 50 ms, "
     "during the polling-adapter trials)", "T+1"),
    ("etcd", "answered_s", "etcd leases", "polling adapter: its create-if-absent txn every T/2 "
     "takes the key", "T+T/2"),
    ("etcd", "decided_s", "etcd leases", "decision visible (key range polled every 50 ms)",
     "T+1"),
)  # fmt: skip
BOUND_LABELS = {"T+T/2": "T + T/2", "T+1": "T + 1 s"}


def _verdict(s: dict[str, Any] | None, trials: int, bound: float) -> str:
    """Within the bound only if every trial failed over and the slowest did so in time."""
    n = s["n"] if s else 0
    if n < trials:
        return f"**missed**: {trials - n} of {trials} trials never got there"
    assert s is not None
    if s["max"] <= bound:
        return "within (max ≤ bound)"
    over = f"**max over by {s['max'] - bound:.3f} s**"
    return f"{over}; median within" if s["median"] <= bound else f"{over}; median over too"


def _failover(f: dict[str, Any], source: str) -> str:
    b = f["bounds_s"]
    rows = []
    for system, key, label, what, bound_key in FAILOVER_ROWS:
        data = f.get(system) or {}
        trials = int(data.get("trials", 0))
        if not trials:
            continue  # not measured in this run (older results have no agent set)
        s = data.get(key)
        bound = b[bound_key]
        rows.append([
            label,
            what,
            f"{s['n'] if s else 0} of {trials}",
            num(_get(s or {}, "median"), 3),
            num(_get(s or {}, "p99"), 3),
            num(_get(s or {}, "max"), 3),
            f"{BOUND_LABELS[bound_key]} = {num(bound, 1)}",
            _verdict(s, trials, bound),
        ])  # fmt: skip
    text = (
        f"## 3. Failover timing, T = {f['T_s']} s (run {source})\n\n"
        "Each trial: adapter a (primary) heartbeats every T/2 and stops at a random moment "
        "(a crash: no unregistering); times are from a's last acknowledged heartbeat to when "
        "the secondary holds Primary. cfs runs two sets of trials in one cluster, one after "
        "the other: the secondary is a polling adapter (heartbeat every T/2, PendingPrimary "
        "confirmed at once), then our agent (`cfs_cluster.agent.FailoverAgent` with all three "
        "node URLs: heartbeat every T/2 plus a long-poll on the session's role; on news it "
        "heartbeats at once, and only a heartbeat answer makes it Primary). Bounds: "
        f"T + T/2 = {b['T+T/2']} s for a polling adapter, T + 1 s = {b['T+1']} s for instant "
        'notice and the decision. A verdict is "within" only if every trial failed over '
        "and the slowest did so within the bound.\n\n"
    )
    text += table(
        ["system", "secondary / measured", "trials", "median (s)", "p99 (s)", "max (s)",
         "bound (s)", "verdict"],
        rows,
    )  # fmt: skip
    raw = (f.get("cfs_agent") or {}).get("raw", [])
    early = sum(int(r.get("early_primary", 0)) for r in raw)
    errors = [r["error"] for r in raw if r.get("error")]
    if early:
        text += f"\n**{early} agent trial(s) reported Primary while a still held it.**\n"
    if errors:
        text += f"\nAgent trials that failed: {len(errors)}, e.g. `{errors[0]}`.\n"
    return text


def _leaderkill(k: dict[str, Any], source: str) -> str:
    return (
        f"## 4. Raft leader kill -9 under heartbeat load (run {source})\n\n"
        f"{num(k['groups'])} groups × 2 sessions heartbeat at {num(k['rate'])}/s through the two "
        f"followers; the leader is killed at t = {k['kill_at_s']} s; new leader {k['new_leader']}.\n\n"
        + table(
            [
                "sent",
                "ok",
                "failed",
                "failure window (s)",
                "role changes",
                "p99 latency (ms)",
                "max latency (ms)",
                "statuses",
            ],
            [
                [
                    num(k["sent"]),
                    num(k["ok"]),
                    num(k["failed"]),
                    num(k["failure_window_s"], 3),
                    str(k["role_changes"]),
                    num(k["latency_p99_ms"], 1),
                    num(k["latency_max_ms"], 1),
                    ", ".join(f"{s}: {n}" for s, n in sorted(k["statuses"].items())),
                ]
            ],
        )  # fmt: skip
    )


def _durability(d: dict[str, Any], source: str) -> str:
    rows = []
    for mode, label in (("synced", "synced (default)"), ("unsynced", "--unsafe-no-fsync")):
        for load, name in (("sequential", "1 at a time"), ("concurrent_32", "32 at once")):
            data = _get(d, mode, load)
            if data:
                rows.append([label, name, num(data["writes_per_s"], 1),
                             num(data["latency_p50_ms"], 2), num(data["latency_p99_ms"], 2),
                             num(_get(d, mode, "leader_syncs_per_write"), 3)])  # fmt: skip
    return (
        f"## 6. Write durability: the cost of fdatasync (run {source})\n\n"
        "Group creations to the leader of a 3-node cluster; a write is answered once the "
        "leader and a follower have synced it. Syncs per write < 1 is group commit.\n\n"
        + table(
            ["journal", "writes", "writes/s", "p50 (ms)", "p99 (ms)", "leader syncs/write"], rows
        )
    )


# ---------------------------------------------------------------------- plots


def plots(results: dict[str, Any], out: Path) -> list[str]:
    """PNG plots (skipped without matplotlib); paths relative to docs/."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out.mkdir(parents=True, exist_ok=True)
    images = []
    t = results["items"].get("throughput")
    if t and "error" not in t:
        bars = {
            "cfs leader": _get(t, "cfs", "leader"),
            "cfs follower": _get(t, "cfs", "follower"),
            "etcd leader": _get(t, "etcd", "leader"),
            "etcd follower": _get(t, "etcd", "follower"),
            "ASGI echo": _get(t, "echo"),
        }
        bars = {k: v for k, v in bars.items() if v}
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        names = list(bars)
        ax1.bar(names, [bars[n]["max"]["rps"] for n in names], color="#4477aa")
        ax1.set_title("maximum req/s (wrk -t1 -c32)")
        ax1.tick_params(axis="x", rotation=30)
        x = range(len(names))
        ax2.bar(
            [i - 0.2 for i in x], [bars[n]["half_load"]["p50_ms"] for n in names], 0.4, label="p50"
        )
        ax2.bar(
            [i + 0.2 for i in x], [bars[n]["half_load"]["p99_ms"] for n in names], 0.4, label="p99"
        )
        ax2.set_xticks(list(x), names, rotation=30)
        ax2.set_title("latency at half of the maximum (ms)")
        ax2.legend()
        fig.tight_layout()
        fig.savefig(out / "throughput.png", dpi=90)
        plt.close(fig)
        images.append("benchmarks/throughput.png")
    f = results["items"].get("failover")
    if f and "error" not in f:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        series = []
        for system, key, label in (
            ("cfs", "answered_s", "cfs polling adapter"),
            ("cfs_agent", "agent_s", "cfs agent"),
            ("cfs", "decided_s", "cfs decided"),
            ("etcd", "answered_s", "etcd polling adapter"),
            ("etcd", "decided_s", "etcd decided"),
        ):
            raw = (f.get(system) or {}).get("raw", [])
            values = [r[key] for r in raw if r.get(key) is not None]
            if values:
                series.append((label, values))
        ax.boxplot(
            [v for _, v in series], tick_labels=[n for n, _ in series], orientation="horizontal"
        )
        bounds = f["bounds_s"]
        if bounds["T+T/2"] == bounds["T+1"]:
            ax.axvline(bounds["T+1"], color="red", linestyle="--", label="T + T/2 = T + 1 s")
        else:
            ax.axvline(bounds["T+T/2"], color="red", linestyle="--", label="T + T/2")
            ax.axvline(bounds["T+1"], color="orange", linestyle=":", label="T + 1 s")
        ax.axvline(f["T_s"], color="grey", linestyle=":", label="T")
        ax.set_xlabel("seconds from the primary's last heartbeat")
        ax.legend(loc="lower left")
        fig.tight_layout()
        fig.savefig(out / "failover.png", dpi=90)
        plt.close(fig)
        images.append("benchmarks/failover.png")
    return images


def _reads(r: dict[str, Any], source: str) -> str:
    rows = [
        [
            f"{role}, {mode}",
            num(r[f"{role}_{mode}"]["rps"]),
            num(r[f"{role}_{mode}"].get("p99_ms", 0), 1),
            num(r[f"{role}_{mode}"]["non_2xx"]),
        ]
        for role in ("leader", "follower")
        for mode in ("consistent", "stale")
    ]
    return (
        f"## 5. Consistent vs stale reads (run {source})\n\n"
        f"`GET` of a group and of a session list over {num(r['groups'])} groups, `wrk -t1 -c32`; "
        "consistent = the default (a batched ReadIndex round), stale = `?stale=true`. "
        f"Consistent/stale: leader {r['leader_consistent_vs_stale']}, "
        f"follower {r['follower_consistent_vs_stale']}.\n\n"
        + table(["node, mode", "reads/s", "p99 (ms)", "non-2xx"], rows)
    )
