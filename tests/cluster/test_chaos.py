"""`make chaos`: a randomized, time-bounded fault schedule against a real 3-node cluster.

Emulated adapters (three groups of two, T = 2 s) heartbeat through all nodes and a writer
creates groups the whole time, while a seeded random schedule injects one fault after another:
kill -9 of the leader or a follower (then restart), SIGSTOP of the leader for 1–4 s, a full
cluster restart, a rolling restart, a leadership transfer, and — where network namespaces are
available — the leader cut off from the majority or a follower isolated. After each fault the
cluster must be ready again within 30 s. At the end the history checker asserts, over the
whole run: P1 no overlapping grants, P2 no role change at all (adapters never stopped),
P4 every acknowledged create present on every node, and no answer other than 200/503.

The report (schedule, faults, failed-heartbeat spans, violations) is printed and written to
``chaos-report.json``; docs/safety.md quotes the latest one. Knobs: CHAOS_SECONDS (default 300),
CHAOS_SEED (default: time-based, printed so a run can be replayed).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.clusterkit import Cluster
from support.faults import create, start_adapters, wait_stable
from support.history import (
    Fleet,
    History,
    failed_seconds,
    missing_creates,
    p1_violations,
    role_changes,
    server_errors,
)
from support.netkit import Network, unavailable_reason

pytestmark = [pytest.mark.chaos, pytest.mark.cluster]

REPORT = Path("chaos-report.json")
READY_TIMEOUT = 30.0
QUIET = (1.0, 3.0)  # seconds of normal operation between faults


Fault = Callable[[Cluster, random.Random], str]


def _kill_leader(c: Cluster, rng: random.Random) -> str:
    leader = c.leader_index()
    c.nodes[leader].kill()
    c.leader_index(timeout=15, exclude={leader})
    time.sleep(rng.uniform(0.5, 2.0))  # the fault: the node stays dead this long
    c.nodes[leader].start()
    return f"kill -9 leader {c.nodes[leader].node_id}"


def _kill_follower(c: Cluster, rng: random.Random) -> str:
    leader = c.leader_index()
    victim = rng.choice([i for i in range(3) if i != leader])
    c.nodes[victim].kill()
    time.sleep(rng.uniform(0.5, 2.0))
    c.nodes[victim].start()
    return f"kill -9 follower {c.nodes[victim].node_id}"


def _pause_leader(c: Cluster, rng: random.Random) -> str:
    leader = c.leader_index()
    seconds = rng.uniform(1.0, 4.0)
    c.nodes[leader].signal(signal.SIGSTOP)
    try:
        time.sleep(seconds)  # the fault: the process is frozen this long
    finally:
        c.nodes[leader].signal(signal.SIGCONT)
    return f"SIGSTOP leader {c.nodes[leader].node_id} {seconds:.1f} s"


def _full_restart(c: Cluster, rng: random.Random) -> str:
    for node in c.nodes:
        node.terminate()
    for node in c.nodes:
        node.start()
    return "full cluster restart (SIGTERM all, start all)"


def _rolling_restart(c: Cluster, rng: random.Random) -> str:
    leader = c.leader_index()
    for i in [*(j for j in range(3) if j != leader), leader]:
        if i == c.leader_index():
            c.client.post(c.nodes[i].url + "/api/v1/cluster/transfer-leader", json={})
        c.nodes[i].terminate()
        c.nodes[i].start()
        c.wait_ready(timeout=READY_TIMEOUT, nodes=[i])
    return "rolling restart"


def _transfer(c: Cluster, rng: random.Random) -> str:
    leader = c.leader_index()
    target = rng.choice([i for i in range(3) if i != leader])
    body = {"To": c.nodes[target].node_id}
    answer = c.client.post(c.nodes[leader].url + "/api/v1/cluster/transfer-leader", json=body)
    return f"transfer-leader to {c.nodes[target].node_id}: {answer.status_code}"


def _partition_faults(net: Network) -> list[tuple[str, Fault]]:
    def cut_leader(c: Cluster, rng: random.Random) -> str:
        leader = c.leader_index()
        for other in range(3):
            if other != leader:
                net.cut(leader, other)
        try:
            c.leader_index(timeout=15, exclude={leader})
            time.sleep(rng.uniform(0.5, 3.0))
        finally:
            net.heal()
        return f"leader {c.nodes[leader].node_id} cut off from the majority"

    def isolate_follower(c: Cluster, rng: random.Random) -> str:
        leader = c.leader_index()
        victim = rng.choice([i for i in range(3) if i != leader])
        for other in range(3):
            if other != victim:
                net.cut(victim, other)
        try:
            time.sleep(rng.uniform(0.5, 3.0))
        finally:
            net.heal()
        return f"follower {c.nodes[victim].node_id} isolated"

    return [("partition-leader", cut_leader), ("isolate-follower", isolate_follower)]


FAULTS: list[tuple[str, Fault]] = [
    ("kill-leader", _kill_leader),
    ("kill-follower", _kill_follower),
    ("pause-leader", _pause_leader),
    ("full-restart", _full_restart),
    ("rolling-restart", _rolling_restart),
    ("transfer-leader", _transfer),
]


@pytest.fixture
def chaos_cluster(tmp_path: Path) -> Iterator[tuple[Cluster, Network | None]]:
    with contextlib.ExitStack() as stack:
        net = None if unavailable_reason() else stack.enter_context(Network())
        placement = net.placement() if net else None
        cluster = stack.enter_context(Cluster(tmp_path, placement=placement))
        yield cluster, net


def test_chaos(chaos_cluster: tuple[Cluster, Network | None]) -> None:
    cluster, net = chaos_cluster
    budget = float(os.environ.get("CHAOS_SECONDS", "300"))
    seed = int(os.environ.get("CHAOS_SEED", str(time.time_ns() % 1_000_000)))
    rng = random.Random(seed)
    faults = FAULTS + (_partition_faults(net) if net else [])
    history = History()
    create(cluster, history)
    schedule: list[dict[str, Any]] = []
    with Fleet(cluster.urls, history, auth=cluster.auth) as fleet:
        start_adapters(fleet)
        since = wait_stable(history)
        fleet.add_writer("chaos", 0.5)
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            name, fault = rng.choice(faults)
            started = time.monotonic()
            what = fault(cluster, rng)
            cluster.wait_ready(timeout=READY_TIMEOUT, nodes=[0, 1, 2])
            ended = time.monotonic()
            time.sleep(rng.uniform(*QUIET))  # normal operation between faults
            window = [r for r in history.snapshot() if started <= r.sent <= ended]
            schedule.append(
                {
                    "fault": name,
                    "what": what,
                    "at": round(started - since, 2),
                    "recovered_after": round(ended - started, 2),
                    "longest_failed_span": round(failed_seconds(window, started), 2),
                }
            )
            print(f"[chaos] {schedule[-1]}", flush=True)
    records = history.snapshot()
    violations = {
        "p1_overlapping_grants": [str(v) for v in p1_violations(records)],
        "p2_role_changes": role_changes(records, since),
        "unexpected_answers": [f"{r.status} {r.error}" for r in server_errors(records)][:20],
        "p4_missing_creates": missing_creates(history, cluster.urls, auth=cluster.auth),
    }
    spans = [s["longest_failed_span"] for s in schedule] or [0.0]
    report = {
        "seed": seed,
        "seconds": budget,
        "partitions": net is not None,
        "faults_injected": len(schedule),
        "by_fault": {n: sum(1 for s in schedule if s["fault"] == n) for n, _ in faults},
        "heartbeats": len(records),
        "failed_heartbeats": sum(1 for r in records if not r.ok),
        "failed_span_median": statistics.median(spans),
        "failed_span_max": max(spans),
        "acknowledged_creates": len(history.creates),
        "violations": {k: len(v) for k, v in violations.items()},
        "violation_details": violations,
        "schedule": schedule,
    }
    REPORT.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "schedule"}, indent=2))
    assert all(not v for v in violations.values()), violations
