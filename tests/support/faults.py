"""The fault-test fleet: groups of emulated adapters through a fault, and the safety checks on it.

Shared by the fault, partition, membership and chaos tests (tests/cluster/).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from support.clusterkit import Cluster
from support.history import (
    Fleet,
    History,
    failed_seconds,
    missing_creates,
    p1_violations,
    primaries_at,
    role_changes,
    server_errors,
)

T = 2.0
GROUPS = [f"g{i}" for i in range(3)]
SESSIONS = ["a", "b"]
MAX_FAILED_SECONDS = 5.0  # asserted bound; the design target (3 s) is reported
GROUPS_API = "/api/v1/clientfailover/groups"


def create(cluster: Cluster, history: History) -> None:
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


def start_adapters(fleet: Fleet) -> None:
    for i, group in enumerate(GROUPS):
        for j, session in enumerate(SESSIONS):
            fleet.add(group, session, T / 2, offset=i + j)


def wait_stable(history: History, timeout: float = 10.0) -> float:
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


def observe(seconds: float) -> None:
    """Let the adapters run on; the history is the measurement, nothing waits on it."""
    time.sleep(seconds)


def check_safety(history: History, since: float) -> None:
    records = history.snapshot()
    violations = p1_violations(records)
    assert not violations, "\n".join(map(str, violations))
    changes = role_changes(records, since)
    assert not changes, "P2 role changes:\n" + "\n".join(changes)
    errors = server_errors(records)
    assert not errors, f"unexpected answers: {errors[:5]}"


def run_fault(
    cluster: Cluster,
    fault: Callable[[Cluster], list[int]],
    health_check: float | None = None,
) -> tuple[History, float]:
    """Adapters + a writer run through the fault; returns the history and the fault time."""
    history = History()
    create(cluster, history)
    with Fleet(cluster.urls, history, health_check=health_check, auth=cluster.auth) as fleet:
        start_adapters(fleet)
        wait_stable(history)
        fleet.add_writer("w", 0.25)
        since = time.monotonic()
        alive = fault(cluster)
        cluster.wait_ready(timeout=20, nodes=alive)
        observe(2 * T)
    survivors = [cluster.nodes[i].url for i in alive]
    missing = missing_creates(history, survivors, auth=cluster.auth)
    assert not missing, f"P4: acknowledged creates missing: {missing[:10]}"
    return history, since


def report(name: str, history: History, since: float) -> float:
    records = [r for r in history.snapshot() if r.sent >= since]
    failed = failed_seconds(records, since)
    errors = sum(1 for r in records if not r.ok)
    print(
        f"\n[{name}] heartbeats {len(records)}, failed {errors}, "
        f"longest failed span {failed:.2f} s (target 3 s), acked creates {len(history.creates)}"
    )
    return failed
