"""Failover timing (item 3) and the Raft leader kill under load (item 4), in the configuration
of the Context (production by default): every raw request carries the credentials, and the
agent is given them."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from cfs_cluster.agent import AgentSettings, ClientRole, FailoverAgent, RoleChange
from cfs_cluster.protocol.wire import TICKS_PER_SECOND, format_timespan

from . import httpload, measure, systems
from .context import Context
from .httpload import Connection, encode

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
        trials = httpload.run(_cfs_trials(ports, ctx.trials, cluster.headers))
        # The agent registers its own session (and finds its group): only the primary's here.
        agent_groups = [f"h{i:05d}" for i in range(ctx.trials)]
        _register_primaries(cluster, agent_groups)
        agent_trials = httpload.run(_agent_trials(ports, agent_groups, cluster.credentials))
        config = cluster.config
    with systems.EtcdCluster(ctx.work / "etcd-failover") as etcd:
        leader = etcd.leader_index()
        leases = etcd.grant(2 * ctx.trials, int(T_FAILOVER), leader)
        etcd_trials = httpload.run(_etcd_trials(etcd.client_ports[leader], leases, ctx.trials))
    assert isinstance(trials, list) and isinstance(etcd_trials, list)
    assert isinstance(agent_trials, list)
    return {
        "config": config,
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
        results = httpload.run(httpload.run_all("127.0.0.1", port, encoded, 32, cluster.headers))
        assert isinstance(results, list)
        bad = [r for r in results if not 200 <= r[0] < 300]
        if bad:
            raise RuntimeError(f"registering {len(bad)} of {len(results)} failed: {bad[:3]}")


class _Primary:
    """Adapter a of a trial: its request every T/2 from ``t0`` until it crashes at ``stop_at``
    (no more requests, no unregistering); ``last`` is when it was last answered 200."""

    def __init__(self, conn: Connection, t0: float, last: float = 0.0) -> None:
        self.conn, self.t0, self.last = conn, t0, last
        self.stop_at = float("inf")

    async def beat(self, request: bytes) -> None:
        next_at = self.t0
        while True:
            next_at += T_FAILOVER / 2
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            if time.perf_counter() >= self.stop_at:
                return
            status, _ = await self.conn.request(request, 5)
            if status == 200:
                self.last = time.perf_counter()


async def _watch_decision(
    conn: Connection,
    request: bytes,
    primary: _Primary,
    deadline: float,
    decided: Callable[[Any], bool],
    result: dict[str, float],
) -> None:
    """Poll ``request`` every 50 ms once a has crashed; 'decided_s' when its JSON answer says so."""
    while time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
        if time.perf_counter() < primary.stop_at:
            continue
        status, body = await conn.request(request, 5)
        if status == 200 and decided(json.loads(body)):
            result["decided_s"] = time.perf_counter() - primary.last
            return


async def _cfs_trials(
    ports: list[int], count: int, headers: dict[str, str]
) -> list[dict[str, float]]:
    return list(
        await asyncio.gather(
            *(_cfs_trial(ports[i % 3], f"f{i:05d}", i, headers) for i in range(count))
        )
    )


async def _cfs_trial(port: int, group: str, seed: int, headers: dict[str, str]) -> dict[str, float]:
    """Adapter a (primary) and b heartbeat every T/2 (the AVEVA cadence); a dies at a random
    moment. 'answered' = b's heartbeat is answered Primary (what a polling adapter learns);
    'decided' = GET status names b, polled every 50 ms (the decision, as soon as visible)."""
    rng = random.Random(seed)
    base = f"{systems.API}/groups/{group}"
    hb = {
        s: encode(
            "127.0.0.1",
            port,
            "POST",
            f"{base}/clientsessions/{s}/heartbeat",
            systems.HB_BODY,
            headers,
        )
        for s in "ab"
    }
    status_req = encode("127.0.0.1", port, "GET", f"{base}/status", b"", headers)
    conns = {name: Connection("127.0.0.1", port) for name in ("a", "b", "status")}
    half = T_FAILOVER / 2
    t0 = time.perf_counter()
    deadline = t0 + TRIAL_LIMIT
    a = _Primary(conns["a"], t0)
    # a first, so a is primary; b joins half a period later
    await conns["a"].request(hb["a"], 5)
    a.stop_at = t0 + 3 * T_FAILOVER + rng.random() * half
    result: dict[str, float] = {}

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
            if role == 1 and time.perf_counter() > a.stop_at:
                result["answered_s"] = time.perf_counter() - a.last
                return

    def b_is_primary(status: Any) -> bool:
        return bool(status.get("Primary") == "b")

    watcher = _watch_decision(conns["status"], status_req, a, deadline, b_is_primary, result)
    try:
        await asyncio.gather(a.beat(hb["a"]), adapter_b(), watcher)
    finally:
        for conn in conns.values():
            conn.close()
    return result


Credentials = tuple[str, str] | None


async def _agent_trials(
    ports: list[int], groups: list[str], credentials: Credentials
) -> list[dict[str, Any]]:
    return list(
        await asyncio.gather(
            *(_agent_trial(ports, i, g, i, credentials) for i, g in enumerate(groups))
        )
    )


async def _agent_trial(
    ports: list[int], index: int, group: str, seed: int, credentials: Credentials
) -> dict[str, Any]:
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
        systems.basic_header(*credentials) if credentials else None,
    )
    conn = Connection("127.0.0.1", port)
    half = T_FAILOVER / 2
    result: dict[str, Any] = {}
    promoted = asyncio.Event()
    t0 = time.perf_counter()
    a = _Primary(conn, t0)  # its stop_at is set once a is primary and the agent runs

    def on_role_change(change: RoleChange) -> None:
        now = time.perf_counter()
        if change.new != ClientRole.Primary:
            return
        if now < a.stop_at:  # Primary while a still heartbeats: a protocol error, count it
            result["early_primary"] = result.get("early_primary", 0) + 1
            return
        if "agent_s" not in result:
            result["agent_s"] = now - a.last
            promoted.set()

    agent = FailoverAgent(
        AgentSettings(
            endpoints=tuple(f"http://127.0.0.1:{p}{systems.API}" for p in rotated),
            group_id=group,
            session_id="b",
            failover_timeout=T_FAILOVER,
            request_timeout=2.0,
            username=credentials[0] if credentials else None,
            password=credentials[1] if credentials else None,
        ),
        on_role_change=on_role_change,
    )
    status, body = await conn.request(hb_a, 5)  # a first, so a is primary
    if status != 200 or json.loads(body).get("Role") != 1:
        conn.close()
        return {"error": f"a not primary: {status} {body[:100]!r}"}

    try:
        await asyncio.sleep(rng.random() * half)  # b's heartbeat phase is random, as above
        await agent.start()
        result["role_before_crash"] = agent.role.name
        a.stop_at = t0 + 3 * T_FAILOVER + rng.random() * half
        runner = asyncio.create_task(a.beat(hb_a))
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
    a = _Primary(conns["a"], t0, last=time.perf_counter())
    a.stop_at = t0 + 3 * T_FAILOVER + rng.random() * half
    result: dict[str, float] = {}

    async def adapter_b() -> None:
        next_at = t0 + rng.random() * half
        while time.perf_counter() < deadline:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            next_at += half
            await conns["b"].request(keepalive(lease_b), 5)
            status, body = await conns["b"].request(take(lease_b, "b"), 5)
            if status == 200 and json.loads(body).get("succeeded"):
                result["answered_s"] = time.perf_counter() - a.last
                return

    def key_is_gone(answer: Any) -> bool:
        return not answer.get("kvs")

    watcher = _watch_decision(conns["watch"], range_req, a, deadline, key_is_gone, result)
    try:
        await asyncio.gather(a.beat(keepalive(lease_a)), adapter_b(), watcher)
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
        # every session heard once; both followers' credential caches warm
        for index in followers:
            measure.wrk(cluster.port(index), requests, 2, headers=cluster.headers)

        async def load_and_kill() -> tuple[httpload.RateResult, float]:
            task = asyncio.create_task(
                httpload.fixed_rate(
                    targets,
                    requests,
                    rate,
                    total,
                    32,
                    10,
                    keep_events=True,
                    headers=cluster.headers,
                )  # fmt: skip
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
        summary = _kill_summary(
            result, requests, sessions, kill_t, cluster.nodes[new_leader].node_id
        )
        summary["config"] = cluster.config
        return summary


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
    # PendingPrimary -> Primary is a first grant being confirmed (a session the warm-up reached
    # once only), not a failover: counted apart from the changes the target forbids.
    pairs = [(x, y) for r in roles.values() for x, y in zip(r, r[1:], strict=False) if x != y]
    confirmations = sum(1 for pair in pairs if pair == (2, 1))
    changes = len(pairs) - confirmations
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
        "confirmations": confirmations,
        "sessions_observed": len(roles),
        "latency_p99_ms": round(httpload.percentile(lat, 99) * 1000, 1),
        "latency_max_ms": round((lat[-1] if lat else 0) * 1000, 1),
        "ok_answers": len(slow),
    }
