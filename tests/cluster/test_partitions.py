"""Network partitions with every node in its own network namespace (issue 3 §4).

The adapters run in the test process and reach the nodes over a private bridge
(tests/support/netkit.py); partitions are iptables DROP rules inside the node namespaces. The same
history checker as tests/cluster/test_faults.py asserts P1 (no overlapping grants), P2 (no role change
while adapters heartbeat) and P3 (prompt promotion when the *primary adapter* is cut off).
Skipped with the reason where namespaces are unavailable (not root, no iproute2/iptables).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
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
    observe,
    report,
    run_fault,
    wait_stable,
)
from support.history import PRIMARY, Fleet, History, p1_violations, primaries_at, promotion_delay
from support.netkit import Network, unavailable_reason

_WHY = unavailable_reason()
pytestmark = [
    pytest.mark.cluster,
    pytest.mark.netns,
    pytest.mark.skipif(_WHY is not None, reason=_WHY or ""),
]


@pytest.fixture
def netcluster(tmp_path: Path) -> Iterator[tuple[Network, Cluster]]:
    with Network() as net, Cluster(tmp_path, placement=net.placement()) as cluster:
        yield net, cluster


def test_leader_cut_off_from_the_majority(netcluster: tuple[Network, Cluster]) -> None:
    """The old leader keeps its adapters' connections but loses both peers: it must stop
    answering roles (relay or 503) and the majority elects a leader that changes no role."""
    net, cluster = netcluster

    def cut_leader(c: Cluster) -> list[int]:
        leader = c.leader_index()
        for other in range(3):
            if other != leader:
                net.cut(leader, other)
        c.leader_index(timeout=15, exclude={leader})
        observe(T)  # adapters heartbeat through the partition
        net.heal()
        return [0, 1, 2]

    history, since = run_fault(cluster, cut_leader)
    check_safety(history, since)
    failed = report("leader cut off from the majority", history, since)
    assert failed <= MAX_FAILED_SECONDS


def test_one_follower_isolated(netcluster: tuple[Network, Cluster]) -> None:
    net, cluster = netcluster

    def isolate_follower(c: Cluster) -> list[int]:
        leader = c.leader_index()
        follower = (leader + 1) % 3
        for other in range(3):
            if other != follower:
                net.cut(follower, other)
        observe(T)
        net.heal()
        return [0, 1, 2]

    history, since = run_fault(cluster, isolate_follower)
    check_safety(history, since)
    failed = report("one follower isolated", history, since)
    assert failed <= MAX_FAILED_SECONDS


def test_primary_adapter_cut_off_from_a_healthy_cluster(
    netcluster: tuple[Network, Cluster],
) -> None:
    """The primary adapter's network fails, not the cluster: the secondary is promoted
    within T + T/2 + 1 s of the primary's last heartbeat, and only after the old grant
    lapsed (P1 over send times and ValidFor)."""
    net, cluster = netcluster
    history = History()
    create(cluster, history)
    with Fleet(cluster.urls, history, auth=cluster.auth) as fleet:
        for i, group in enumerate(GROUPS):
            for j, session in enumerate(SESSIONS):
                cut = group == GROUPS[0] and session == "a"
                source = net.cut_off_source if cut else None
                fleet.add(
                    group, session, T / 2, offset=i + j, source=source, score=60 if cut else 50
                )
        wait_stable(history)
        assert primaries_at(history.snapshot(), time.monotonic())[GROUPS[0]] == {"a"}
        net.isolate_source(net.cut_off_source)
        stop_time = time.monotonic()
        observe(T + T / 2 + 1.5)
    records = history.snapshot()
    assert not p1_violations(records), "\n".join(map(str, p1_violations(records)))
    delay = promotion_delay(records, GROUPS[0], "a", stop_time)
    print(f"\n[primary adapter cut off] promotion after {delay} s (T = {T} s)")
    assert delay is not None and delay <= T + T / 2 + 1.0
    late = [
        r
        for r in records
        if r.group == GROUPS[0] and r.session == "b" and r.received > stop_time + delay
    ]
    assert late and all(r.role == PRIMARY for r in late if r.ok)
