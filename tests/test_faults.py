"""Fault tests over recorded heartbeat histories (design.md P1-P4, issue 3's fast subset).

Three groups of two emulated adapters (FailoverTimeout T = 2 s, heartbeats every T/2 through
all nodes, moving to the next node on an error) run while a node is killed, paused or lost.
Every heartbeat is recorded and checked afterwards by tests/history.py. Timings are printed
(run with -s to see them); only generous safety bounds are asserted.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from clusterkit import Cluster
from history import (
    PRIMARY,
    Fleet,
    History,
    Record,
    failed_seconds,
    missing_creates,
    p1_violations,
    primaries_at,
    promotion_delay,
    role_changes,
    server_errors,
)

pytestmark = pytest.mark.cluster

T = 2.0
GROUPS = [f"g{i}" for i in range(3)]
SESSIONS = ["a", "b"]
MAX_FAILED_SECONDS = 5.0  # asserted bound; the design target (3 s) is reported
GROUPS_API = "/api/v1/clientfailover/groups"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(tmp_path) as running:
        yield running


def _create(cluster: Cluster, history: History) -> None:
    """Groups and sessions, each through a different node; every 2xx is an acknowledged create."""
    urls = cluster.urls
    for i, group in enumerate(GROUPS):
        body = {"Id": group, "FailoverTimeout": "00:00:02"}
        response = cluster.client.post(urls[i % 3] + GROUPS_API, json=body)
        assert response.status_code == 201, response.text
        history.creates.append((group, None))
        for j, session in enumerate(SESSIONS):
            url = urls[(i + j + 1) % 3] + f"{GROUPS_API}/{group}/clientsessions"
            response = cluster.client.post(url, json={"Id": session})
            assert response.status_code == 201, response.text
            history.creates.append((group, session))


def _start_adapters(fleet: Fleet) -> None:
    for i, group in enumerate(GROUPS):
        for j, session in enumerate(SESSIONS):
            fleet.add(group, session, T / 2, offset=i + j)


def _wait_stable(history: History, timeout: float = 10.0) -> float:
    """Wait until every group has exactly one Primary and every adapter two answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.monotonic()
        records = history.snapshot()
        answered = {r.key for r in records if r.ok}
        primaries = primaries_at(records, now)
        enough = all(
            sum(1 for r in records if r.ok and r.key == (g, s)) >= 2
            for g in GROUPS
            for s in SESSIONS
        )
        if enough and len(answered) == 6 and all(len(primaries.get(g, ())) == 1 for g in GROUPS):
            return now
        time.sleep(0.1)
    raise AssertionError(
        f"groups never settled: {primaries_at(history.snapshot(), time.monotonic())}"
    )


def _observe(seconds: float) -> None:
    """Let the adapters run on; the history is the measurement, nothing waits on it."""
    time.sleep(seconds)


def _check_safety(history: History, since: float) -> None:
    records = history.snapshot()
    violations = p1_violations(records)
    assert not violations, "\n".join(map(str, violations))
    changes = role_changes(records, since)
    assert not changes, "P2 role changes:\n" + "\n".join(changes)
    errors = server_errors(records)
    assert not errors, f"unexpected answers: {errors[:5]}"


def _run_fault(
    cluster: Cluster,
    fault: Callable[[Cluster], list[int]],
    health_check: float | None = None,
) -> tuple[History, float]:
    """Adapters + a writer run through the fault; returns the history and the fault time."""
    history = History()
    _create(cluster, history)
    with Fleet(cluster.urls, history, health_check=health_check, auth=cluster.auth) as fleet:
        _start_adapters(fleet)
        _wait_stable(history)
        fleet.add_writer("w", 0.25)
        since = time.monotonic()
        alive = fault(cluster)
        cluster.wait_ready(timeout=20, nodes=alive)
        _observe(2 * T)
    survivors = [cluster.nodes[i].url for i in alive]
    missing = missing_creates(history, survivors, auth=cluster.auth)
    assert not missing, f"P4: acknowledged creates missing: {missing[:10]}"
    return history, since


def _report(name: str, history: History, since: float) -> float:
    records = [r for r in history.snapshot() if r.sent >= since]
    failed = failed_seconds(records, since)
    errors = sum(1 for r in records if not r.ok)
    print(
        f"\n[{name}] heartbeats {len(records)}, failed {errors}, "
        f"longest failed span {failed:.2f} s (target 3 s), acked creates {len(history.creates)}"
    )
    return failed


def test_leader_kill(cluster: Cluster) -> None:
    def kill_leader(c: Cluster) -> list[int]:
        leader = c.leader_index()
        c.nodes[leader].kill()
        c.leader_index(timeout=15, exclude={leader})
        return [i for i in range(3) if i != leader]

    history, since = _run_fault(cluster, kill_leader)
    _check_safety(history, since)
    failed = _report("leader kill -9", history, since)
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

    history, since = _run_fault(cluster, pause_leader)
    _check_safety(history, since)
    failed = _report("leader SIGSTOP 3 s", history, since)
    assert failed <= MAX_FAILED_SECONDS


def test_follower_kill(cluster: Cluster) -> None:
    def kill_follower(c: Cluster) -> list[int]:
        leader = c.leader_index()
        follower = (leader + 1) % 3
        c.nodes[follower].kill()
        return [i for i in range(3) if i != follower]

    history, since = _run_fault(cluster, kill_follower)
    _check_safety(history, since)
    failed = _report("follower kill -9", history, since)
    assert failed <= MAX_FAILED_SECONDS


def test_primary_adapter_crash_promotes_secondary(cluster: Cluster) -> None:
    """P3 for polling adapters: promotion within T + T/2 + 1 s of the primary's last heartbeat."""
    history = History()
    _create(cluster, history)
    with Fleet(cluster.urls, history, auth=cluster.auth) as fleet:
        _start_adapters(fleet)
        since = _wait_stable(history)
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


def test_history_checker_flags_overlapping_grants() -> None:
    """The checker itself: a grant overlapping another session's grant is a P1 violation."""

    def answer(session: str, sent: float, role: int, valid: float) -> Record:
        return Record("g", session, "u", sent, sent + 0.01, 200, role, 1, valid)

    safe = [answer("a", 0.0, PRIMARY, 2.0), answer("b", 2.5, PRIMARY, 2.0)]
    assert p1_violations(safe) == []
    overlapping = [answer("a", 0.0, PRIMARY, 2.0), answer("b", 1.0, PRIMARY, 2.0)]
    assert len(p1_violations(overlapping)) == 1
    released = [
        answer("a", 0.0, PRIMARY, 2.0),
        answer("a", 0.5, 0, 0.0),
        answer("b", 1.0, PRIMARY, 2.0),
    ]
    assert p1_violations(released) == []
    assert role_changes(released, since=0.4) == [
        "g/a at +0.11 s via u: (role, epoch) (1, 1) -> (0, 1)"
    ]
    failing = [
        Record("g", "a", "u", 0.0, 0.1, 200, 1, 1, 2.0),
        Record("g", "a", "u", 1.0, 1.1, None),
        Record("g", "a", "u", 1.2, 1.3, 503),
        Record("g", "a", "u", 1.4, 1.5, 200, 1, 1, 2.0),
    ]
    assert failed_seconds(failing, since=0.5) == pytest.approx(0.5)


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
    history, since = _run_fault(cluster, _rolling_restart)
    _check_safety(history, since)
    failed = _report("rolling restart, direct", history, since)
    assert failed <= MAX_FAILED_SECONDS


def test_rolling_restart_behind_a_load_balancer_fails_no_heartbeat(tmp_path: Path) -> None:
    """With --drain-seconds a stopping node first answers /readyz 503 and hands leadership
    over while still serving, so adapters behind a /readyz-checking balancer (emulated by the
    fleet, probing every 0.2 s) never send a heartbeat to a node that is going away."""
    with Cluster(tmp_path, extra_args=["--drain-seconds", "1.0"]) as cluster:
        history, since = _run_fault(cluster, _rolling_restart, health_check=0.2)
    _check_safety(history, since)
    _report("rolling restart, load balancer", history, since)
    failures = [r for r in history.snapshot() if r.sent >= since and not r.ok]
    assert not failures, f"{len(failures)} failed heartbeats: {failures[:3]}"
