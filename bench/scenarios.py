"""The benchmark items of issue 6. Each takes a Context and returns a JSON-able dict."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfs_cluster.agent import AgentSettings, ClientRole, FailoverAgent, RoleChange
from cfs_cluster.protocol.wire import TICKS_PER_SECOND, format_timespan

from . import httpload, measure, systems
from .httpload import Connection, encode


@dataclass
class Context:
    work: Path  # scratch directory for data dirs and logs
    results: Path  # where profiles are kept
    duration: float = 10.0  # seconds per wrk / fixed-rate run
    groups: int = 2000  # groups × 2 sessions cycled by the load generator
    capacity_groups: int = 10_000
    trials: int = 24


def _max_and_half(
    port: int, requests: list[httpload.Request], ctx: Context, pids: list[int]
) -> dict[str, Any]:
    """wrk maximum (with CPU% per process), then the fixed-rate client at half of it."""
    window = measure.CpuWindow(pids).start()
    maximum = measure.wrk(port, requests, ctx.duration)
    maximum["cpu_pct"] = window.stop()
    rate = max(maximum["rps"] / 2, 50)
    half = httpload.run(httpload.fixed_rate([("127.0.0.1", port)], requests, rate, ctx.duration))
    assert isinstance(half, httpload.RateResult)
    return {"max": maximum, "half_load": half.summary()}


def _profile(
    pid: int, port: int, requests: list[httpload.Request], ctx: Context, name: str
) -> dict[str, Any]:
    out = ctx.results / f"{name}.pyspy.txt"
    spy = measure.profile_start(pid, ctx.duration, out)
    if spy is None:
        return {"error": "py-spy not installed"}
    time.sleep(0.5)  # py-spy attaches
    loaded = measure.wrk(port, requests, ctx.duration - 1)
    spy.wait(timeout=ctx.duration + 30)
    summary = measure.summarize_profile(out)
    summary["rps_while_profiled"] = loaded["rps"]
    summary["file"] = out.name
    return summary


# ---------------------------------------------------------------------- 1 + 5: throughput


def throughput(ctx: Context) -> dict[str, Any]:
    return {
        "cfs": _cfs_throughput(ctx),
        "echo": _echo_throughput(ctx),
        "etcd": _etcd_throughput(ctx),
    }


def _cfs_throughput(ctx: Context) -> dict[str, Any]:
    with systems.CfsCluster(ctx.work / "cfs-throughput") as cluster:
        sessions, seconds = cluster.register(ctx.groups, "00:00:15")
        requests = systems.heartbeat_requests(sessions)
        random.Random(1).shuffle(requests)
        leader = cluster.leader_index()
        follower = cluster.follower_index(leader)
        measure.wrk(cluster.port(leader), requests, 2)  # warm-up: first heartbeat of each session
        result: dict[str, Any] = {
            "sessions": len(sessions),
            "register_seconds": round(seconds, 2),
            "register_writes_per_s": round((len(sessions) + ctx.groups) / seconds, 1),
            "leader": _max_and_half(cluster.port(leader), requests, ctx, cluster.pids()),
            "follower": _max_and_half(cluster.port(follower), requests, ctx, cluster.pids()),
        }
        pids = cluster.pids()
        result["profile_leader"] = _profile(
            pids[leader], cluster.port(leader), requests, ctx, "cfs-leader"
        )
        result["profile_follower"] = _profile(
            pids[follower], cluster.port(follower), requests, ctx, "cfs-follower"
        )
        result["profile_leader_via_follower"] = _profile_pair(
            cluster, leader, follower, requests, ctx
        )
        return result


def _profile_pair(
    cluster: systems.CfsCluster,
    leader: int,
    follower: int,
    requests: list[httpload.Request],
    ctx: Context,
) -> dict[str, Any]:
    """The leader's side of relayed heartbeats: profile the leader while wrk drives a follower."""
    out = ctx.results / "cfs-leader-relayed.pyspy.txt"
    spy = measure.profile_start(cluster.pids()[leader], ctx.duration, out)
    if spy is None:
        return {"error": "py-spy not installed"}
    time.sleep(0.5)
    measure.wrk(cluster.port(follower), requests, ctx.duration - 1)
    spy.wait(timeout=ctx.duration + 30)
    summary = measure.summarize_profile(out)
    summary["file"] = out.name
    return summary


def _echo_throughput(ctx: Context) -> dict[str, Any]:
    with systems.EchoServer(ctx.work) as echo:
        assert echo.proc is not None
        requests = systems.heartbeat_requests(
            [(f"g{i:05d}", s) for i in range(ctx.groups) for s in "ab"]
        )
        measure.wrk(echo.port, requests, 2)
        return _max_and_half(echo.port, requests, ctx, [echo.proc.pid])


def _etcd_throughput(ctx: Context) -> dict[str, Any]:
    with systems.EtcdCluster(ctx.work / "etcd-throughput") as etcd:
        leader = etcd.leader_index()
        follower = (leader + 1) % 3
        leases = etcd.grant(2 * ctx.groups, 120, leader)
        requests = systems.keepalive_requests(leases)
        random.Random(1).shuffle(requests)
        measure.wrk(etcd.client_ports[leader], requests, 2)
        return {
            "leases": len(leases),
            "leader": _max_and_half(etcd.client_ports[leader], requests, ctx, etcd.pids()),
            "follower": _max_and_half(etcd.client_ports[follower], requests, ctx, etcd.pids()),
        }


# ---------------------------------------------------------------------- 2: capacity


def capacity(ctx: Context) -> dict[str, Any]:
    """10,000 groups × 2 sessions at T = 15 s: what holding them costs, and restart time."""
    base = ctx.work / "cfs-capacity"
    with systems.CfsCluster(base) as cluster:
        pids = cluster.pids()
        rss_empty = [measure.rss_mb(p) for p in pids]
        sessions, seconds = cluster.register(ctx.capacity_groups, "00:00:15")
        idle = measure.CpuWindow(pids).start()
        time.sleep(5)
        cpu_idle = idle.stop()
        # every session heartbeats every T/2 = 7.5 s, spread over the three nodes like a balancer
        rate = len(sessions) / 7.5
        targets = [("127.0.0.1", cluster.port(i)) for i in range(3)]
        window = measure.CpuWindow(pids).start()
        held = httpload.run(
            httpload.fixed_rate(targets, systems.heartbeat_requests(sessions), rate, 15, 48)
        )
        assert isinstance(held, httpload.RateResult)
        cpu_held = window.stop()
        rss_held = [measure.rss_mb(p) for p in pids]
        time.sleep(2.5)  # one checkpoint interval, so the heartbeats' checkpoint is in the log
        for node in cluster.nodes:
            node.terminate()
        disk = {n.node_id: measure.files_bytes(n.data_dir) for n in cluster.nodes}
        start = time.monotonic()
        for node in cluster.nodes:
            node.start()
        cluster.wait_ready(timeout=120)
        ready = time.monotonic() - start
        total = _group_count(cluster)
        return {
            "groups": ctx.capacity_groups,
            "sessions": len(sessions),
            "register_seconds": round(seconds, 1),
            "register_writes_per_s": round((len(sessions) + ctx.capacity_groups) / seconds, 1),
            "rss_mb_empty": rss_empty,
            "rss_mb_held": rss_held,
            "cpu_pct_idle": cpu_idle,
            "cpu_pct_heartbeating": cpu_held,
            "heartbeat_load": held.summary(),
            "disk_bytes": disk,
            "restart_to_ready_s": round(ready, 2),
            "groups_after_restart": total,
        }


def _group_count(cluster: systems.CfsCluster) -> int:
    response = cluster.client.get(cluster.nodes[0].url + f"{systems.API}/groups?count=1")
    return int(response.headers.get("Total-Count", -1))


# ---------------------------------------------------------------------- 3: failover timing

T_FAILOVER = 2.0  # seconds; the protocol's bounds are T + T/2 and T + 1 s
T_SPAN = format_timespan(round(T_FAILOVER * TICKS_PER_SECOND))  # "00:00:02"
TRIAL_LIMIT = 30.0  # seconds a trial waits for the secondary to become Primary
TIMING_KEYS = ("answered_s", "decided_s", "agent_s")


def failover(ctx: Context) -> dict[str, Any]:
    """Primary crashes, ``ctx.trials`` times per system: when does the secondary hold Primary?

    cfs runs two sets of groups in one cluster, one after the other so they do not load each
    other: a polling adapter (the commercial protocol) as the secondary, then our agent
    (cfs_cluster.agent.FailoverAgent, instant notice by the role long-poll)."""
    with systems.CfsCluster(ctx.work / "cfs-failover") as cluster:
        cluster.register(ctx.trials, T_SPAN, prefix="f")
        ports = [cluster.port(i) for i in range(3)]
        trials = httpload.run(_cfs_trials(ports, ctx.trials))
        # The agent registers its own session (and finds its group): only the primary's here.
        agent_groups = [f"h{i:05d}" for i in range(ctx.trials)]
        _register_primaries(cluster, agent_groups)
        agent_trials = httpload.run(_agent_trials(ports, agent_groups))
    with systems.EtcdCluster(ctx.work / "etcd-failover") as etcd:
        leader = etcd.leader_index()
        leases = etcd.grant(2 * ctx.trials, int(T_FAILOVER), leader)
        etcd_trials = httpload.run(_etcd_trials(etcd.client_ports[leader], leases, ctx.trials))
    assert isinstance(trials, list) and isinstance(etcd_trials, list)
    assert isinstance(agent_trials, list)
    return {
        "T_s": T_FAILOVER,
        "bounds_s": {"T+T/2": T_FAILOVER * 1.5, "T+1": T_FAILOVER + 1},
        "cfs": _timing_summary(trials),
        "cfs_agent": _timing_summary(agent_trials),
        "etcd": _timing_summary(etcd_trials),
    }


def _timing_summary(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Per measured key: median, p99, max, min and n (trials that produced the key)."""
    out: dict[str, Any] = {"trials": len(trials), "raw": trials}
    for key in TIMING_KEYS:
        values = sorted(t[key] for t in trials if t.get(key) is not None)
        if values:
            out[key] = {
                "median": round(statistics.median(values), 3),
                "p99": round(httpload.percentile(values, 99), 3),
                "max": round(values[-1], 3),
                "min": round(values[0], 3),
                "n": len(values),
            }
    return out


def _register_primaries(cluster: systems.CfsCluster, groups: list[str]) -> None:
    """Create ``groups`` (T = T_FAILOVER) with one session, a, through the leader's API."""
    port = cluster.port(cluster.leader_index())
    for requests in (
        [
            ("POST", f"{systems.API}/groups", json.dumps({"Id": g, "FailoverTimeout": T_SPAN}))
            for g in groups
        ],
        [
            (
                "POST",
                f"{systems.API}/groups/{g}/clientsessions",
                json.dumps({"Id": "a", "Name": "a"}),
            )
            for g in groups
        ],
    ):
        encoded = [(m, p, b.encode()) for m, p, b in requests]
        results = httpload.run(httpload.run_all("127.0.0.1", port, encoded, 32))
        assert isinstance(results, list)
        bad = [r for r in results if not 200 <= r[0] < 300]
        if bad:
            raise RuntimeError(f"registering {len(bad)} of {len(results)} failed: {bad[:3]}")


async def _cfs_trials(ports: list[int], count: int) -> list[dict[str, float]]:
    return list(
        await asyncio.gather(*(_cfs_trial(ports[i % 3], f"f{i:05d}", i) for i in range(count)))
    )


async def _cfs_trial(port: int, group: str, seed: int) -> dict[str, float]:
    """Adapter a (primary) and b heartbeat every T/2 (the AVEVA cadence); a dies at a random
    moment. 'answered' = b's heartbeat is answered Primary (what a polling adapter learns);
    'decided' = GET status names b, polled every 50 ms (the decision, as soon as visible)."""
    rng = random.Random(seed)
    base = f"{systems.API}/groups/{group}"
    hb = {
        s: encode(
            "127.0.0.1", port, "POST", f"{base}/clientsessions/{s}/heartbeat", systems.HB_BODY
        )
        for s in "ab"
    }
    status_req = encode("127.0.0.1", port, "GET", f"{base}/status", b"")
    conns = {name: Connection("127.0.0.1", port) for name in ("a", "b", "status")}
    half = T_FAILOVER / 2
    t0 = time.perf_counter()
    deadline = t0 + TRIAL_LIMIT
    last_a = 0.0
    # a first, so a is primary; b joins half a period later
    await conns["a"].request(hb["a"], 5)
    stop_a_at = t0 + 3 * T_FAILOVER + rng.random() * half
    result: dict[str, float] = {}

    async def adapter_a() -> None:
        nonlocal last_a
        next_at = t0
        while True:
            next_at += half
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            if time.perf_counter() >= stop_a_at:
                return
            status, _ = await conns["a"].request(hb["a"], 5)
            if status == 200:
                last_a = time.perf_counter()

    async def adapter_b() -> None:
        next_at = t0 + rng.random() * half
        while time.perf_counter() < deadline:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            next_at += half
            for _ in range(11):  # PendingPrimary: confirm at once, at most 10 times (spec)
                status, body = await conns["b"].request(hb["b"], 5)
                role = json.loads(body).get("Role") if status == 200 else None
                if role != 2:
                    break
            if role == 1 and time.perf_counter() > stop_a_at:
                result["answered_s"] = time.perf_counter() - last_a
                return

    async def watcher() -> None:
        while time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
            if time.perf_counter() < stop_a_at:
                continue
            status, body = await conns["status"].request(status_req, 5)
            if status == 200 and json.loads(body).get("Primary") == "b":
                result["decided_s"] = time.perf_counter() - last_a
                return

    try:
        await asyncio.gather(adapter_a(), adapter_b(), watcher())
    finally:
        for conn in conns.values():
            conn.close()
    return result


async def _agent_trials(ports: list[int], groups: list[str]) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(_agent_trial(ports, i, g, i) for i, g in enumerate(groups))))


async def _agent_trial(ports: list[int], index: int, group: str, seed: int) -> dict[str, Any]:
    """Adapter a (primary, raw heartbeats every T/2) dies at a random moment; the secondary is
    our agent, given all three node URLs (from the same node as a's). 'agent' = its role-change
    callback reports Primary, timed from a's last acknowledged heartbeat."""
    rng = random.Random(seed)
    port = ports[index % 3]
    rotated = ports[index % 3 :] + ports[: index % 3]
    hb_a = encode(
        "127.0.0.1",
        port,
        "POST",
        f"{systems.API}/groups/{group}/clientsessions/a/heartbeat",
        systems.HB_BODY,
    )
    conn = Connection("127.0.0.1", port)
    half = T_FAILOVER / 2
    result: dict[str, Any] = {}
    promoted = asyncio.Event()
    last_a = 0.0
    stop_a_at = float("inf")  # set once a is primary and the agent runs

    def on_role_change(change: RoleChange) -> None:
        now = time.perf_counter()
        if change.new != ClientRole.Primary:
            return
        if now < stop_a_at:  # Primary while a still heartbeats: a protocol error, count it
            result["early_primary"] = result.get("early_primary", 0) + 1
            return
        if "agent_s" not in result:
            result["agent_s"] = now - last_a
            promoted.set()

    agent = FailoverAgent(
        AgentSettings(
            endpoints=tuple(f"http://127.0.0.1:{p}{systems.API}" for p in rotated),
            group_id=group,
            session_id="b",
            failover_timeout=T_FAILOVER,
            request_timeout=2.0,
        ),
        on_role_change=on_role_change,
    )
    t0 = time.perf_counter()
    status, body = await conn.request(hb_a, 5)  # a first, so a is primary
    if status != 200 or json.loads(body).get("Role") != 1:
        conn.close()
        return {"error": f"a not primary: {status} {body[:100]!r}"}

    async def adapter_a() -> None:
        nonlocal last_a
        next_at = t0
        while True:
            next_at += half
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            if time.perf_counter() >= stop_a_at:
                return  # crashed: no more heartbeats, no unregistering
            status, _ = await conn.request(hb_a, 5)
            if status == 200:
                last_a = time.perf_counter()

    try:
        await asyncio.sleep(rng.random() * half)  # b's heartbeat phase is random, as above
        await agent.start()
        result["role_before_crash"] = agent.role.name
        stop_a_at = t0 + 3 * T_FAILOVER + rng.random() * half
        runner = asyncio.create_task(adapter_a())
        try:
            async with asyncio.timeout(max(0.0, t0 + TRIAL_LIMIT - time.perf_counter())):
                await promoted.wait()
        except TimeoutError:
            result["error"] = f"agent not Primary {TRIAL_LIMIT} s into the trial"
        await runner
        result["agent_epoch"] = agent.epoch
    finally:
        conn.close()
        await agent.stop()
    return result


async def _etcd_trials(port: int, leases: list[str], count: int) -> list[dict[str, float]]:
    return list(
        await asyncio.gather(
            *(
                _etcd_trial(port, f"/fo/{i}", leases[2 * i], leases[2 * i + 1], i)
                for i in range(count)
            )
        )
    )


async def _etcd_trial(
    port: int, key: str, lease_a: str, lease_b: str, seed: int
) -> dict[str, float]:
    """The same job with etcd: each adapter keeps its lease alive every T/2 and tries to take
    the key with a create-if-absent txn; lease expiry deletes the dead primary's key.
    'answered' = b's periodic txn succeeds; 'decided' = the key is gone (range polled every 50 ms)."""
    rng = random.Random(seed)
    k = systems.b64(key)

    def take(lease: str, name: str) -> bytes:
        txn = {
            "compare": [{"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": {"key": k, "value": systems.b64(name), "lease": lease}}],
        }
        return encode("127.0.0.1", port, "POST", "/v3/kv/txn", json.dumps(txn).encode())

    def keepalive(lease: str) -> bytes:
        return encode(
            "127.0.0.1", port, "POST", "/v3/lease/keepalive", json.dumps({"ID": lease}).encode()
        )

    range_req = encode("127.0.0.1", port, "POST", "/v3/kv/range", json.dumps({"key": k}).encode())
    conns = {name: Connection("127.0.0.1", port) for name in ("a", "b", "watch")}
    half = T_FAILOVER / 2
    t0 = time.perf_counter()
    deadline = t0 + 30
    await conns["a"].request(take(lease_a, "a"), 5)
    last_a = time.perf_counter()
    stop_a_at = t0 + 3 * T_FAILOVER + rng.random() * half
    result: dict[str, float] = {}

    async def adapter_a() -> None:
        nonlocal last_a
        next_at = t0
        while True:
            next_at += half
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            if time.perf_counter() >= stop_a_at:
                return
            status, _ = await conns["a"].request(keepalive(lease_a), 5)
            if status == 200:
                last_a = time.perf_counter()

    async def adapter_b() -> None:
        next_at = t0 + rng.random() * half
        while time.perf_counter() < deadline:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            next_at += half
            await conns["b"].request(keepalive(lease_b), 5)
            status, body = await conns["b"].request(take(lease_b, "b"), 5)
            if status == 200 and json.loads(body).get("succeeded"):
                result["answered_s"] = time.perf_counter() - last_a
                return

    async def watcher() -> None:
        while time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
            if time.perf_counter() < stop_a_at:
                continue
            status, body = await conns["watch"].request(range_req, 5)
            if status == 200 and not json.loads(body).get("kvs"):
                result["decided_s"] = time.perf_counter() - last_a
                return

    try:
        await asyncio.gather(adapter_a(), adapter_b(), watcher())
    finally:
        for conn in conns.values():
            conn.close()
    return result


# ---------------------------------------------------------------------- 4: leader kill


def leaderkill(ctx: Context) -> dict[str, Any]:
    """kill -9 the Raft leader while 1,000 groups × 2 heartbeat through the two followers."""
    groups, rate, before, total = 1000, 1000.0, 6.0, 24.0
    with systems.CfsCluster(ctx.work / "cfs-leaderkill") as cluster:
        sessions, _ = cluster.register(groups, "00:00:15")
        requests = systems.heartbeat_requests(sessions)
        leader = cluster.leader_index()
        followers = [i for i in range(3) if i != leader]
        targets = [("127.0.0.1", cluster.port(i)) for i in followers]
        measure.wrk(cluster.port(followers[0]), requests, 2)  # every session heard once

        async def load_and_kill() -> tuple[httpload.RateResult, float]:
            task = asyncio.create_task(
                httpload.fixed_rate(targets, requests, rate, total, 32, 10, keep_events=True)
            )
            await asyncio.sleep(before)
            killed_at = time.perf_counter()
            cluster.nodes[leader].kill()
            return await task, killed_at

        started = time.perf_counter()
        out = httpload.run(load_and_kill())
        assert isinstance(out, tuple)
        result, killed_at = out
        kill_t = killed_at - started - 0.05  # fixed_rate's t0 is 50 ms after its start
        new_leader = cluster.leader_index(exclude={leader})
        return _kill_summary(result, requests, sessions, kill_t, cluster.nodes[new_leader].node_id)


def _kill_summary(
    result: httpload.RateResult,
    requests: list[httpload.Request],
    sessions: list[tuple[str, str]],
    kill_t: float,
    new_leader: str,
) -> dict[str, Any]:
    failures = [t for t, _, status, _ in result.events if not 200 <= status < 300]
    roles: dict[int, list[int]] = {}
    slow = [t for t, _, status, _ in result.events if 200 <= status < 300]
    for _, k, status, body in sorted(result.events):
        if 200 <= status < 300:
            roles.setdefault(k % len(requests), []).append(json.loads(body)["Role"])
    changes = sum(sum(1 for x, y in zip(r, r[1:], strict=False) if x != y) for r in roles.values())
    lat = sorted(result.latencies)
    return {
        "groups": len(sessions) // 2,
        "rate": result.rate,
        "kill_at_s": round(kill_t, 2),
        "new_leader": new_leader,
        "sent": result.sent,
        "ok": result.ok,
        "failed": len(failures),
        "statuses": {str(k): v for k, v in result.statuses.items()},
        "failure_window_s": round(failures[-1] - failures[0], 3) if failures else 0.0,
        "first_failure_after_kill_s": round(failures[0] - kill_t, 3) if failures else None,
        "role_changes": changes,
        "sessions_observed": len(roles),
        "latency_p99_ms": round(httpload.percentile(lat, 99) * 1000, 1),
        "latency_max_ms": round((lat[-1] if lat else 0) * 1000, 1),
        "ok_answers": len(slow),
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
        result: dict[str, Any] = {"groups": READ_GROUPS}
        for role, index in (("leader", leader), ("follower", follower)):
            for mode, query in (("consistent", ""), ("stale", "?stale=true")):
                requests = [("GET", path + query, b"") for path in paths]
                result[f"{role}_{mode}"] = measure.wrk(cluster.port(index), requests, ctx.duration)
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
            sequential = asyncio.run(_write_load(port, 1, ctx.duration / 2, f"s{mode}"))
            concurrent = asyncio.run(_write_load(port, 32, ctx.duration / 2, f"c{mode}"))
            syncs = _journal_syncs(cluster, leader) - syncs_before
            writes = sequential["writes"] + concurrent["writes"]
            result[mode] = {
                "sequential": sequential,
                "concurrent_32": concurrent,
                "leader_syncs_per_write": round(syncs / writes, 3) if writes else None,
            }
    return result


def _journal_syncs(cluster: systems.CfsCluster, index: int) -> int:
    text = cluster.client.get(cluster.urls[index] + "/metrics").text
    line = next((x for x in text.splitlines() if x.startswith("cfs_journal_syncs_total")), None)
    return 0 if line is None else int(float(line.split()[-1]))


async def _write_load(port: int, concurrency: int, seconds: float, prefix: str) -> dict[str, Any]:
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
                raw = encode("127.0.0.1", port, "POST", f"{systems.API}/groups", body.encode())
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
    "capacity": capacity,
    "failover": failover,
    "leaderkill": leaderkill,
    "reads": reads,
    "durability": durability,
}
