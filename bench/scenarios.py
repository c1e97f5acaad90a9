"""The throughput, reads and durability items, and the registry of every item (ITEMS).

Each item takes a Context and returns a JSON-able dict. cfs runs in the production configuration
(systems.CfsCluster) unless a key says ``dev``; each result carries the ``config`` it was
measured on, which bench/render.py prints above its table.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

from . import capacity as capacity_items
from . import failover as failover_items
from . import httpload, measure, systems
from .context import Context, max_and_half, wrk_profile
from .httpload import Connection, encode

# ---------------------------------------------------------------------- 1 + 5: throughput

THROUGHPUT_SPAN = "00:01:00"


def throughput(ctx: Context) -> dict[str, Any]:
    """cfs (production), etcd, cfs (--dev) and the echo ceiling, one after the other, one run."""
    result: dict[str, Any] = {"cfs": _cfs_throughput(ctx, production=True)}
    result["etcd"] = _etcd_throughput(ctx)
    if ctx.dev:
        result["cfs_dev"] = _cfs_throughput(ctx, production=False)
    result["echo"] = _echo_throughput(ctx)
    return result


def _cfs_throughput(ctx: Context, production: bool) -> dict[str, Any]:
    name = "cfs-throughput" if production else "cfs-throughput-dev"
    with systems.CfsCluster(ctx.work / name, production=production) as cluster:
        # T = 60 s: on a loaded machine wrk may cycle through 5,000 sessions slower than every
        # 15 s, and expiring sessions would measure failover writes, not the heartbeat path
        sessions, seconds = cluster.register(ctx.groups, THROUGHPUT_SPAN)
        requests = systems.heartbeat_requests(sessions)
        random.Random(1).shuffle(requests)
        leader = cluster.leader_index()
        follower = cluster.follower_index(leader)
        headers = cluster.headers
        # warm-up: the first heartbeat of each session, and every node's credential cache
        for index in (leader, follower):
            measure.wrk(cluster.port(index), requests, 2, headers=headers)
        pids = cluster.pids()
        result: dict[str, Any] = {
            "config": cluster.config,
            "sessions": len(sessions),
            "T": THROUGHPUT_SPAN,
            "register_seconds": round(seconds, 2),
            "register_writes_per_s": round((len(sessions) + ctx.groups) / seconds, 1),
            "leader": max_and_half(cluster.port(leader), requests, ctx, pids, headers),
            "follower": max_and_half(cluster.port(follower), requests, ctx, pids, headers),
        }
        if production:  # the profiles of what users run
            result["profile_leader"] = wrk_profile(
                cluster, leader, leader, requests, ctx, "cfs-leader"
            )
            result["profile_follower"] = wrk_profile(
                cluster, follower, follower, requests, ctx, "cfs-follower"
            )
            result["profile_leader_via_follower"] = wrk_profile(
                cluster, leader, follower, requests, ctx, "cfs-leader-relayed"
            )
        return result


def _echo_throughput(ctx: Context) -> dict[str, Any]:
    with systems.EchoServer(ctx.work) as echo:
        assert echo.proc is not None
        requests = systems.heartbeat_requests(
            [(f"g{i:05d}", s) for i in range(ctx.groups) for s in "ab"]
        )
        measure.wrk(echo.port, requests, 2)
        return max_and_half(echo.port, requests, ctx, [echo.proc.pid])


def _etcd_throughput(ctx: Context) -> dict[str, Any]:
    with systems.EtcdCluster(ctx.work / "etcd-throughput") as etcd:
        leader = etcd.leader_index()
        follower = (leader + 1) % 3
        leases = etcd.grant(2 * ctx.groups, 120, leader)
        requests = systems.keepalive_requests(leases)
        random.Random(1).shuffle(requests)
        measure.wrk(etcd.client_ports[leader], requests, 2)
        return {
            "config": {"mode": "etcd 3.4", "nodes": 3, "auth": "none", "journal": "fdatasync"},
            "leases": len(leases),
            "leader": max_and_half(etcd.client_ports[leader], requests, ctx, etcd.pids()),
            "follower": max_and_half(etcd.client_ports[follower], requests, ctx, etcd.pids()),
        }


# ---------------------------------------------------------------------- reads (issue 14)

READ_GROUPS = 200


def reads(ctx: Context) -> dict[str, Any]:
    """Group and session-list reads/s and p99, linearizable (the default: a ReadIndex round
    per batch, through the leader on a follower) against ``?stale=true``, leader vs follower."""
    with systems.CfsCluster(ctx.work / "cfs-reads") as cluster:
        sessions, _ = cluster.register(READ_GROUPS, "00:00:15")
        leader = cluster.leader_index()
        follower = cluster.follower_index(leader)
        paths = [f"{systems.API}/groups/{g}" for g, _ in sessions[::2]]
        paths += [f"{systems.API}/groups/{g}/clientsessions" for g, _ in sessions[::2]]
        random.Random(2).shuffle(paths)
        result: dict[str, Any] = {"groups": READ_GROUPS, "config": cluster.config}
        for role, index in (("leader", leader), ("follower", follower)):
            for mode, query in (("consistent", ""), ("stale", "?stale=true")):
                requests = [("GET", path + query, b"") for path in paths]
                result[f"{role}_{mode}"] = measure.wrk(
                    cluster.port(index), requests, ctx.duration, headers=cluster.headers
                )
        for role in ("leader", "follower"):
            stale, consistent = result[f"{role}_stale"]["rps"], result[f"{role}_consistent"]["rps"]
            result[f"{role}_consistent_vs_stale"] = round(consistent / stale, 2) if stale else None
        return result


# --------------------------------------------------------------------------- durability


def durability(ctx: Context) -> dict[str, Any]:
    """The cost of syncing the journal (issue 15): writes/s and latency to the leader of a
    3-node cluster, one write at a time and 32 at once, synced and with --unsafe-no-fsync
    (the durability of pysyncobj's own journal: none against power loss)."""
    result: dict[str, Any] = {}
    for mode, extra in (("synced", []), ("unsynced", ["--unsafe-no-fsync"])):
        with systems.CfsCluster(ctx.work / f"durability-{mode}", extra_args=extra) as cluster:
            leader = cluster.leader_index()
            port = cluster.port(leader)
            syncs_before = _journal_syncs(cluster, leader)
            auth = cluster.headers
            sequential = asyncio.run(_write_load(port, 1, ctx.duration / 2, f"s{mode}", auth))
            concurrent = asyncio.run(_write_load(port, 32, ctx.duration / 2, f"c{mode}", auth))
            syncs = _journal_syncs(cluster, leader) - syncs_before
            writes = sequential["writes"] + concurrent["writes"]
            result[mode] = {
                "config": cluster.config,
                "sequential": sequential,
                "concurrent_32": concurrent,
                "leader_syncs_per_write": round(syncs / writes, 3) if writes else None,
            }
    return result


def _journal_syncs(cluster: systems.CfsCluster, index: int) -> int:
    text = cluster.client.get(cluster.urls[index] + "/metrics").text
    line = next((x for x in text.splitlines() if x.startswith("cfs_journal_syncs_total")), None)
    return 0 if line is None else int(float(line.split()[-1]))


async def _write_load(
    port: int, concurrency: int, seconds: float, prefix: str, headers: dict[str, str]
) -> dict[str, Any]:
    """Create groups for ``seconds`` over ``concurrency`` connections; rate and latency."""
    latencies: list[float] = []
    failures = 0
    deadline = time.monotonic() + seconds
    counter = 0

    async def worker() -> None:
        nonlocal counter, failures
        conn = Connection("127.0.0.1", port)
        try:
            while time.monotonic() < deadline:
                counter += 1
                body = json.dumps({"Id": f"{prefix}{counter}", "FailoverTimeout": "00:00:30"})
                raw = encode(
                    "127.0.0.1", port, "POST", f"{systems.API}/groups", body.encode(), headers
                )
                started = time.perf_counter()
                status, _ = await conn.request(raw, 10)
                if status == 201:
                    latencies.append(time.perf_counter() - started)
                else:
                    failures += 1
        finally:
            conn.close()

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    latencies.sort()
    return {
        "writes": len(latencies),
        "writes_per_s": round(len(latencies) / elapsed, 1),
        "latency_p50_ms": round(httpload.percentile(latencies, 50) * 1000, 2),
        "latency_p99_ms": round(httpload.percentile(latencies, 99) * 1000, 2),
        "failures": failures,
    }


ITEMS = {
    "throughput": throughput,
    "capacity": capacity_items.capacity,
    "costmodel": capacity_items.costmodel,
    "failover": failover_items.failover,
    "leaderkill": failover_items.leaderkill,
    "reads": reads,
    "durability": durability,
}
