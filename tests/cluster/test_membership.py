"""Membership at runtime (issue 3 §3): 3 → 5 → 3 under adapter load, unsafe changes refused,
leadership transfer. Real `cfs serve` processes; the CLI is run as a subprocess like an operator
would; emulated adapters (tests/support/history.py) heartbeat through the original three nodes the
whole time and the history checker asserts that no role changed and no grants overlapped."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest
from support.clusterkit import Cluster, free_ports
from support.faults import check_safety, create, report, start_adapters, wait_stable
from support.history import Fleet, History

pytestmark = pytest.mark.cluster

MEMBERS = "/api/v1/cluster/members"


def _cli(cluster: Cluster, index: int, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "cfs_cluster", "cluster", "--url", cluster.nodes[index].url]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=90)


def _voters(cluster: Cluster, index: int) -> list[str]:
    status = cluster.status(index)
    assert status is not None, cluster.tail_log(index)
    return sorted(m["Raft"] for m in status["Members"])


def _wait_voters(cluster: Cluster, indexes: list[int], expected: list[str]) -> None:
    """Every listed node's own view of the voters converges to ``expected`` (bounded)."""
    deadline = time.monotonic() + 20
    views: dict[int, list[str]] = {}
    while time.monotonic() < deadline:
        views = {i: _voters(cluster, i) for i in indexes}
        if all(v == sorted(expected) for v in views.values()):
            return
        time.sleep(0.1)
    raise AssertionError(f"voters never converged to {sorted(expected)}: {views}")


def _live(cluster: Cluster) -> list[int]:
    return [i for i, n in enumerate(cluster.nodes) if n.alive]


def test_grow_to_five_and_shrink_to_three_under_load(cluster: Cluster) -> None:
    history = History()
    create(cluster, history)
    original = cluster.urls[:3]
    with Fleet(original, history) as fleet:
        start_adapters(fleet)
        wait_stable(history)
        since = time.monotonic()

        # 3 -> 4 through the CLI on a follower (forwarded to the leader), 4 -> 5 through the API.
        leader = cluster.leader_index()
        fourth = cluster.spawn()
        done = _cli(cluster, (leader + 1) % 3, "add-node", cluster.nodes[fourth].raft)
        assert done.returncode == 0, done.stderr
        assert "added" in done.stdout
        fifth = cluster.spawn()
        added = cluster.client.post(
            cluster.nodes[leader].url + MEMBERS, json={"Raft": cluster.nodes[fifth].raft}
        )
        assert added.status_code == 201, added.text
        assert added.json()["CaughtUp"] is True
        five = [n.raft for n in cluster.nodes]
        cluster.wait_ready(timeout=30)
        _wait_voters(cluster, _live(cluster), five)

        # The new members serve: a group created through n5 is visible through n4.
        body = {"Id": "grown", "FailoverTimeout": "00:01:00"}
        created = cluster.client.post(
            cluster.nodes[fifth].url + "/api/v1/clientfailover/groups", json=body
        )
        assert created.status_code == 201, created.text
        history.creates.append(("grown", None))

        # 5 -> 4: remove n4 by node id through the CLI, then stop it as the CLI says.
        done = _cli(cluster, 0, "remove-node", cluster.nodes[fourth].node_id)
        assert done.returncode == 0, done.stderr
        assert "Stop the removed node" in done.stdout
        cluster.nodes[fourth].terminate()

        # 4 -> 3: remove the current leader itself (it hands leadership over first).
        leader = cluster.leader_index()
        removed = cluster.client.delete(
            cluster.nodes[fifth].url + f"{MEMBERS}/{cluster.nodes[leader].raft}"
        )
        assert removed.status_code == 200, removed.text
        cluster.nodes[leader].terminate()
        remaining = [i for i in _live(cluster)]
        assert len(remaining) == 3
        _wait_voters(cluster, remaining, [cluster.nodes[i].raft for i in remaining])
        cluster.wait_ready(timeout=30, nodes=remaining)
        fleet.urls = [cluster.nodes[i].url for i in remaining if cluster.nodes[i].url in original]
        time.sleep(1.0)  # adapters keep running on the survivors; the history is the measurement

    check_safety(history, since)
    report("membership 3->5->3", history, since)
    for i in remaining:
        found = cluster.client.get(cluster.nodes[i].url + "/api/v1/clientfailover/groups/grown")
        assert found.status_code == 200, (i, found.text)


def test_unsafe_changes_are_refused_with_reasons(cluster: Cluster) -> None:
    url = cluster.nodes[0].url
    (unused,) = free_ports(1)
    cases: list[tuple[str, Any, int, str]] = [
        ("post", {"Raft": f"127.0.0.1:{unused}"}, 409, "not reachable"),
        ("post", {"Raft": cluster.nodes[1].raft}, 409, "already a member"),
        ("post", {"Raft": "no-port"}, 400, "host:port"),
        ("post", {"Raft": 5690}, 400, "host:port"),
        ("post", ["127.0.0.1:1"], 400, "JSON object"),
    ]
    for method, body, status, words in cases:
        response = cluster.client.request(method.upper(), url + MEMBERS, json=body)
        assert response.status_code == status, (body, response.text)
        assert words in response.json()["Reason"], response.json()
    missing = cluster.client.delete(url + f"{MEMBERS}/no-such-node")
    assert missing.status_code == 404, missing.text
    assert _voters(cluster, 0) == sorted(n.raft for n in cluster.nodes)

    # With one follower down, removing the other live follower would leave 1 of 2 reachable.
    leader = cluster.leader_index()
    down, up = [(leader + 1) % 3, (leader + 2) % 3]
    cluster.nodes[down].kill()
    refused = cluster.client.delete(
        cluster.nodes[leader].url + f"{MEMBERS}/{cluster.nodes[up].node_id}"
    )
    assert refused.status_code == 409, refused.text
    assert "could not commit" in refused.json()["Reason"]
    # Removing the dead one is safe: 2 members, both reachable.
    dropped = cluster.client.delete(
        cluster.nodes[leader].url + f"{MEMBERS}/{cluster.nodes[down].raft}"
    )
    assert dropped.status_code == 200, dropped.text
    assert dropped.json()["Voters"] == sorted([cluster.nodes[leader].raft, cluster.nodes[up].raft])
    cluster.wait_ready(timeout=20, nodes=[leader, up])


def test_transfer_leader_through_a_follower(cluster: Cluster) -> None:
    leader = cluster.leader_index()
    target = (leader + 2) % 3
    via = (leader + 1) % 3
    done = _cli(cluster, via, "transfer-leader", "--to", cluster.nodes[target].node_id)
    assert done.returncode == 0, done.stderr
    assert cluster.leader_index() == target
    status = _cli(cluster, via, "status")
    assert status.returncode == 0, status.stderr
    assert cluster.nodes[target].node_id in status.stdout.splitlines()[0]
    # A follower's /api/v1/cluster shows the leader's match index and lag for every member.
    view = cluster.status(via)
    assert view is not None and view["MembersView"] == "leader"
    assert all(m["MatchIndex"] is not None and m["Lag"] is not None for m in view["Members"])
