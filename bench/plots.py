"""PNG plots for docs/benchmarks.md (skipped without matplotlib): paths relative to docs/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .tables import get as _get


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
            "cfs --dev leader": _get(t, "cfs_dev", "leader"),
            "cfs --dev follower": _get(t, "cfs_dev", "follower"),
            "etcd leader": _get(t, "etcd", "leader"),
            "etcd follower": _get(t, "etcd", "follower"),
            "ASGI echo": _get(t, "echo"),
        }
        bars = {k: v for k, v in bars.items() if v}
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        names = list(bars)
        ax1.bar(names, [bars[n]["max"]["rps"] for n in names], color="#4477aa")
        ax1.set_title("maximum req/s (wrk -t1 -c32); cfs: production unless --dev")
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
    c = results["items"].get("costmodel")
    if c and "error" not in c and c.get("nodes"):
        images.append(_costmodel(plt, c, out))
    return images


def _costmodel(plt: Any, c: dict[str, Any], out: Path) -> str:
    """CPU per node (max and sum over nodes) and p50/p99 against sessions and against rate."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for nodes, run in sorted(c["nodes"].items()):
        for col, (key, xkey, xlabel) in enumerate(
            (
                ("by_sessions", "sessions", f"sessions (heartbeats at {c['rate']}/s)"),
                ("by_rate", "rate", f"heartbeats/s ({c['fixed_sessions']:,} sessions)"),
            )
        ):
            points = run.get(key) or []
            if not points:
                continue
            xs = [p[xkey] for p in points]
            cpu, lat = axes[0][col], axes[1][col]
            cpu.plot(xs, [max(p["cpu_pct"]) for p in points], "o-", label=f"{nodes} nodes, busiest")
            cpu.plot(xs, [sum(p["cpu_pct"]) for p in points], "s--", label=f"{nodes} nodes, sum")
            cpu.plot(
                xs, [sum(p["idle_cpu_pct"]) for p in points], "x:", label=f"{nodes} nodes, idle sum"
            )
            lat.plot(xs, [p["p50_ms"] for p in points], "o-", label=f"{nodes} nodes, p50")
            lat.plot(xs, [p["p99_ms"] for p in points], "s--", label=f"{nodes} nodes, p99")
            cpu.set_xlabel(xlabel)
            lat.set_xlabel(xlabel)
            cpu.set_ylabel("CPU % (100 = one core)")
            lat.set_ylabel("latency (ms, open loop)")
            lat.set_yscale("log")
    for ax in axes.flat:
        if ax.has_data():
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
    fig.suptitle("cost model (production configuration)")
    fig.tight_layout()
    fig.savefig(out / "costmodel.png", dpi=90)
    plt.close(fig)
    return "benchmarks/costmodel.png"
