"""Fault tests over recorded heartbeat histories (design.md P1-P4, issue 3's fast subset).

Three groups of two emulated adapters (FailoverTimeout T = 2 s, heartbeats every T/2 through
all nodes, moving to the next node on an error) run while a node is killed, paused or lost.
Every heartbeat is recorded and checked afterwards by tests/support/history.py. Timings are printed
(run with -s to see them); only generous safety bounds are asserted.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from support.clusterkit import Cluster
from support.faults import (
    GROUPS,
    MAX_FAILED_SECONDS,
    SESSIONS,
    T,
    check_safety,
    create,
    report,
    run_fault,
    start_adapters,
    wait_stable,
)
from support.history import (
    PRIMARY,
    Fleet,
    History,
    p1_violations,
    primaries_at,
    promotion_delay,
    role_changes,
    server_errors,
)

pytestmark = pytest.mark.cluster


def test_leader_kill(cluster: Cluster) -> None:
    def kill_leader(c: Cluster) -> list[int]:
        leader = c.leader_index()
        c.nodes[leader].kill()
        c.leader_index(timeout=15, exclude={leader})
        return [i for i in range(3) if i != leader]

    history, since = run_fault(cluster, kill_leader)
    check_safety(history, since)
    failed = report("leader kill -9", history, since)
    assert failed <= MAX_FAILED_SECONDS


def test_leader_paused(cluster: Cluster) -> None:
    def pause_leader(c: Cluster) -> list[int]:
        leader = c.leader_index()
        resume_at = time.monotonic() + 3.0
        c.nodes[leader].signal(signal.SIGSTOP)
        try:
            c.leader_index(timeout=15, exclude={leader})
            time.sleep(max(0.0, resume_at - time.monotonic()))  # the fault: stopped for 3 s
        finally:
            c.nodes[leader].signal(signal.SIGCONT)
        return [0, 1, 2]

    history, since = run_fault(cluster, pause_leader)
    check_safety(history, since)
    failed = report("leader SIGSTOP 3 s", history, since)
    assert failed <= MAX_FAILED_SECONDS


def test_follower_kill(cluster: Cluster) -> None:
    def kill_follower(c: Cluster) -> list[int]:
        leader = c.leader_index()
        follower = (leader + 1) % 3
        c.nodes[follower].kill()
        return [i for i in range(3) if i != follower]

    history, since = run_fault(cluster, kill_follower)
    check_safety(history, since)
    failed = report("follower kill -9", history, since)
    assert failed <= MAX_FAILED_SECONDS


def test_primary_adapter_crash_promotes_secondary(cluster: Cluster) -> None:
    """P3 for polling adapters: promotion within T + T/2 + 1 s of the primary's last heartbeat."""
    history = History()
    create(cluster, history)
    with Fleet(cluster.urls, history, auth=cluster.auth) as fleet:
        start_adapters(fleet)
        since = wait_stable(history)
        group = GROUPS[0]
        (primary,) = primaries_at(history.snapshot(), since)[group]
        (secondary,) = set(SESSIONS) - {primary}
        stop_time = fleet.crash(group, primary)
        deadline = time.monotonic() + 3 * T + 2
        while time.monotonic() < deadline:
            records = history.of((group, secondary))
            if any(r.ok and r.role == PRIMARY and r.sent > stop_time for r in records):
                break
            time.sleep(0.05)
    records = history.snapshot()
    delay = promotion_delay(records, group, primary, stop_time)
    print(f"\n[primary adapter crash] promotion delay {delay} s (bound {T + T / 2 + 1:.1f} s)")
    assert delay is not None, (
        f"{secondary} was never promoted: {history.of((group, secondary))[-5:]}"
    )
    assert delay <= T + T / 2 + 1
    violations = p1_violations(records)
    assert not violations, "\n".join(map(str, violations))
    others = [r for r in records if r.group != group]
    assert not role_changes(others, since)
    assert not server_errors(records)


def _rolling_restart(c: Cluster) -> list[int]:
    """The documented upgrade: one node at a time, the leader last after handing leadership
    over; each node must be ready again before the next goes down."""
    leader = c.leader_index()
    for i in [*(j for j in range(3) if j != leader), leader]:
        if i == c.leader_index():
            moved = c.client.post(c.nodes[i].url + "/api/v1/cluster/transfer-leader", json={})
            assert moved.status_code == 200, moved.text
        assert c.nodes[i].terminate() in (0, -signal.SIGTERM), c.tail_log(i)  # not -9
        c.nodes[i].start()
        c.wait_ready(timeout=30, nodes=[i])
    return [0, 1, 2]


def test_rolling_restart_changes_no_role(cluster: Cluster) -> None:
    """Adapters that talk to the nodes directly: a heartbeat sent to a stopped node fails and
    is retried on the next node; no role may change."""
    history, since = run_fault(cluster, _rolling_restart)
    check_safety(history, since)
    failed = report("rolling restart, direct", history, since)
    assert failed <= MAX_FAILED_SECONDS


def test_rolling_restart_behind_a_load_balancer_fails_no_heartbeat(tmp_path: Path) -> None:
    """With --drain-seconds a stopping node first answers /readyz 503 and hands leadership
    over while still serving, so adapters behind a /readyz-checking balancer (emulated by the
    fleet, probing every 0.2 s) never send a heartbeat to a node that is going away."""
    with Cluster(tmp_path, extra_args=["--drain-seconds", "1.0"]) as cluster:
        history, since = run_fault(cluster, _rolling_restart, health_check=0.2)
    check_safety(history, since)
    report("rolling restart, load balancer", history, since)
    failures = [r for r in history.snapshot() if r.sent >= since and not r.ok]
    assert not failures, f"{len(failures)} failed heartbeats: {failures[:3]}"
