"""Capacity (issue 16's check) and the cost model, in the production configuration.

- ``capacity``: 20,000 sessions (10,000 groups × 2) at T = 15 s, every session heartbeating every
  T/2 from the OPEN-LOOP client (bench/httpload.py: request k is due at t0 + k/rate, latency from
  the due time) spread over the three nodes like a balancer: first the mass start (the first T
  after registration, when every group's grant and its confirmation are Raft writes), then the
  steady state; p50/p99 and errors of each, CPU and RSS per node, a py-spy profile of the leader
  under that load, and the whole cluster's restart. The stretch: 100,000 sessions at T = 60 s.
- ``costmodel``: CPU per node (from /proc) and p50/p99 against the number of sessions at a fixed
  heartbeat rate, and against the heartbeat rate at a fixed number of sessions, 3 and 5 nodes.
  Every session has heartbeated once (so it is live) before anything is measured, and T is long
  (30 min) so that nobody expires: the idle CPU is the background cost of live sessions, the
  loaded CPU minus it the cost of the heartbeats. At each session count the load window runs
  twice: the first (right after the new sessions' first heartbeats) is kept as ``first_window``,
  the second is the point.
"""

from __future__ import annotations

import random
import time
from typing import Any

from . import httpload, measure, systems
from .context import Context, profile_while

CONNECTIONS = 128  # default open-loop connections over all nodes (20,000 adapters hold 20,000)
COST_SPAN = "00:30:00"
IDLE_SECONDS = 5.0


def _targets(cluster: systems.CfsCluster) -> list[tuple[str, int]]:
    return [("127.0.0.1", cluster.port(i)) for i in range(len(cluster.nodes))]


def _open_loop(
    cluster: systems.CfsCluster,
    requests: list[httpload.Request],
    rate: float,
    seconds: float,
    connections: int = CONNECTIONS,
) -> httpload.RateResult:
    result = httpload.run(
        httpload.fixed_rate(
            _targets(cluster), requests, rate, seconds, connections, 5, headers=cluster.headers
        )
    )
    assert isinstance(result, httpload.RateResult)
    return result


# ---------------------------------------------------------------------- capacity


def capacity(ctx: Context) -> dict[str, Any]:
    result: dict[str, Any] = {
        "target": {"p99_ms": 50.0, "errors": 0},
        "standard": _capacity_run(ctx, ctx.capacity_groups, 15.0, "capacity", restart=True),
    }
    if ctx.stretch:
        result["stretch"] = _capacity_run(ctx, 50_000, 60.0, "capacity-stretch", restart=False)
    return result


def _capacity_run(
    ctx: Context, groups: int, timeout_s: float, name: str, restart: bool
) -> dict[str, Any]:
    span = time.strftime("%H:%M:%S", time.gmtime(timeout_s))
    with systems.CfsCluster(ctx.work / f"cfs-{name}") as cluster:
        pids = cluster.pids()
        rss_empty = [measure.rss_mb(p) for p in pids]
        sessions, seconds = cluster.register(groups, span)
        requests = systems.heartbeat_requests(sessions)
        random.Random(3).shuffle(requests)
        rate = len(sessions) / (timeout_s / 2)  # every session every T/2
        connections = ctx.capacity_connections
        # The mass start: for the first T every heartbeat round is Raft writes — the first
        # heartbeat of each group grants its primary, the holder's next one confirms it — so it
        # is measured apart from the steady state that follows.
        start_load = _open_loop(cluster, requests, rate, timeout_s, connections)
        window = measure.CpuWindow(pids).start()
        held = _open_loop(cluster, requests, rate, ctx.capacity_seconds, connections)
        cpu_held = window.stop()
        rss_held = [measure.rss_mb(p) for p in pids]
        leader = cluster.leader_index()
        profile = profile_while(
            pids[leader],
            ctx,
            f"cfs-{name}-leader",
            lambda: _open_loop(cluster, requests, rate, ctx.duration - 1, connections).summary(),
        )
        result: dict[str, Any] = {
            "config": cluster.config,
            "groups": groups,
            "sessions": len(sessions),
            "T_s": timeout_s,
            "connections": connections,
            "measured_s": ctx.capacity_seconds,
            "register_seconds": round(seconds, 1),
            "register_writes_per_s": round((len(sessions) + groups) / seconds, 1),
            "rss_mb_empty": rss_empty,
            "rss_mb_held": rss_held,
            "cpu_pct_heartbeating": cpu_held,
            "start_load": start_load.summary(),
            "heartbeat_load": held.summary(),
            "statuses": {str(k): v for k, v in held.statuses.items()},
            "leader": cluster.nodes[leader].node_id,
            "profile_leader": profile,
        }
        if restart:
            result.update(_restart(cluster))
        return result


def _restart(cluster: systems.CfsCluster) -> dict[str, Any]:
    time.sleep(2.5)  # one checkpoint interval, so the heartbeats' checkpoint is in the log
    for node in cluster.nodes:
        node.terminate()
    disk = {n.node_id: measure.files_bytes(n.data_dir) for n in cluster.nodes}
    start = time.monotonic()
    for node in cluster.nodes:
        node.start()
    cluster.wait_ready(timeout=120)
    ready = time.monotonic() - start
    cluster.wait_authenticated()
    response = cluster.client.get(cluster.nodes[0].url + f"{systems.API}/groups?count=1")
    return {
        "disk_bytes": disk,
        "restart_to_ready_s": round(ready, 2),
        "groups_after_restart": int(response.headers.get("Total-Count", -1)),
    }


# ---------------------------------------------------------------------- cost model


def costmodel(ctx: Context) -> dict[str, Any]:
    result: dict[str, Any] = {
        "rate": ctx.cost_rate,
        "fixed_sessions": ctx.cost_fixed_sessions,
        "T": COST_SPAN,
        "idle_seconds": IDLE_SECONDS,
        "load_seconds": ctx.duration,
        "nodes": {},
    }
    for nodes in ctx.cost_nodes:
        result["nodes"][str(nodes)] = _sweep(ctx, nodes)
    return result


def _sweep(ctx: Context, nodes: int) -> dict[str, Any]:
    """One cluster; sessions added step by step; at each step idle CPU, then the fixed rate."""
    sizes = sorted(set(ctx.cost_sessions) | {ctx.cost_fixed_sessions})
    by_sessions: list[dict[str, Any]] = []
    by_rate: list[dict[str, Any]] = []
    with systems.CfsCluster(ctx.work / f"cfs-cost-{nodes}", size=nodes) as cluster:
        sessions: list[tuple[str, str]] = []
        for step, size in enumerate(sizes):
            added, seconds = cluster.register((size - len(sessions)) // 2, COST_SPAN, f"c{step}-")
            _hear_once(cluster, added)
            sessions += added
            requests = systems.heartbeat_requests(sessions)
            random.Random(step).shuffle(requests)
            idle = _idle(cluster)
            if size in ctx.cost_sessions:
                # the first window after new sessions were heard carries their aftermath
                # (checkpoints, compaction); the second is the steady state at this size
                first = _loaded(cluster, requests, ctx.cost_rate, ctx.duration)
                point = _loaded(cluster, requests, ctx.cost_rate, ctx.duration)
                by_sessions.append({
                    "sessions": len(sessions), "register_s": round(seconds, 1), **idle, **point,
                    "first_window": first,
                })  # fmt: skip
                print(f"bench: costmodel {nodes} nodes {len(sessions)} sessions: {point}")
            if size == ctx.cost_fixed_sessions:
                for rate in ctx.cost_rates:
                    point = _loaded(cluster, requests, rate, ctx.duration)
                    by_rate.append({"rate": rate, "sessions": len(sessions), **idle, **point})
                    print(f"bench: costmodel {nodes} nodes {rate}/s: {point}")
        return {"config": cluster.config, "by_sessions": by_sessions, "by_rate": by_rate}


def _hear_once(cluster: systems.CfsCluster, sessions: list[tuple[str, str]]) -> None:
    """One heartbeat per new session, so it is live (the first ones are decisions: writes)."""
    cluster.send_all(cluster.port(cluster.leader_index()), systems.heartbeat_requests(sessions))


def _idle(cluster: systems.CfsCluster) -> dict[str, Any]:
    time.sleep(2.5)  # the first heartbeats' checkpoint and decisions settle
    window = measure.CpuWindow(cluster.pids()).start()
    time.sleep(IDLE_SECONDS)
    return {
        "idle_cpu_pct": window.stop(),
        "rss_mb": [measure.rss_mb(p) for p in cluster.pids()],
    }


def _loaded(
    cluster: systems.CfsCluster, requests: list[httpload.Request], rate: float, seconds: float
) -> dict[str, Any]:
    window = measure.CpuWindow(cluster.pids()).start()
    load = _open_loop(cluster, requests, rate, seconds)
    cpu = window.stop()
    summary = load.summary()
    return {
        "cpu_pct": cpu,
        "achieved_rate": summary["achieved_rate"],
        "p50_ms": summary["p50_ms"],
        "p99_ms": summary["p99_ms"],
        "errors": summary["errors"],
    }
