"""Three real `cfs serve` processes: roles survive leader loss, restarts keep every write.

Each test starts its own cluster (tests/support/clusterkit.py) and stops every process it started by PID.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import httpx
import pytest
from support.clusterkit import Cluster

pytestmark = pytest.mark.cluster

API = "/api/v1/clientfailover"
PRIMARY, SECONDARY = 1, 0


def _post(cluster: Cluster, url: str, body: dict[str, Any], expect: int = 201) -> dict[str, Any]:
    response = cluster.client.post(url, json=body)
    assert response.status_code == expect, f"{url}: {response.status_code} {response.text}"
    result: dict[str, Any] = response.json()
    return result


def _heartbeat(client: httpx.Client, base: str, group: str, session: str) -> httpx.Response:
    url = f"{base}{API}/groups/{group}/clientsessions/{session}/heartbeat"
    return client.post(url, json={"FailoverScore": 50}, timeout=2)


def _make_group(
    cluster: Cluster, via: int, group: str, timeout: str, sessions: list[str], reg_via: int
) -> None:
    _post(
        cluster, cluster.nodes[via].url + f"{API}/groups", {"Id": group, "FailoverTimeout": timeout}
    )
    for session in sessions:
        url = cluster.nodes[reg_via].url + f"{API}/groups/{group}/clientsessions"
        _post(cluster, url, {"Id": session, "Name": f"adapter {session}"})


def _settle_roles(cluster: Cluster, via: int, group: str) -> dict[str, tuple[int, int]]:
    """Heartbeat a then b through node ``via`` until the group has a Primary; return (role, epoch)."""
    deadline = time.monotonic() + 10
    roles: dict[str, tuple[int, int]] = {}
    while time.monotonic() < deadline:
        for session in ("a", "b"):
            response = _heartbeat(cluster.client, cluster.nodes[via].url, group, session)
            assert response.status_code == 200, response.text
            body = response.json()
            roles[session] = (body["Role"], body["Epoch"])
        if sorted(role for role, _ in roles.values()) == [SECONDARY, PRIMARY]:
            return roles
        time.sleep(0.1)
    raise AssertionError(f"no Primary/Secondary pair in {group}: {roles}")


def _followers(cluster: Cluster, leader: int) -> list[int]:
    return [i for i, node in enumerate(cluster.nodes) if i != leader and node.alive]


def _group_view(cluster: Cluster, index: int, group: str) -> dict[str, Any]:
    base = cluster.nodes[index].url + f"{API}/groups/{group}"
    parts = {"group": base, "status": base + "/status", "sessions": base + "/clientsessions"}
    view: dict[str, Any] = {}
    for name, url in parts.items():
        response = cluster.client.get(url)
        assert response.status_code == 200, f"{url}: {response.status_code} {response.text}"
        view[name] = response.json()
    return view


def _durable(view: dict[str, Any]) -> dict[str, Any]:
    """The replicated facts of a group (heartbeat details are checkpoint-fresh, not compared)."""
    sessions = sorted(
        (s["Id"], s["Name"], s["RoleOverride"], s["RoleOverrideExpirationTime"])
        for s in view["sessions"]
    )
    status = view["status"]
    return {
        "group": view["group"],
        "sessions": sessions,
        "primary": status["Primary"],
        "epoch": status["Epoch"],
    }


def test_cluster_status_and_health_probes(cluster: Cluster) -> None:
    leader = cluster.leader_index()
    for i in range(3):
        status = cluster.status(i)
        assert status is not None
        assert status["NodeId"] == cluster.nodes[i].node_id
        assert status["Leader"] == cluster.nodes[leader].node_id
        assert status["Term"] >= 1
        assert 0 < status["AppliedIndex"] <= status["CommitIndex"]
        assert {m["Id"] for m in status["Members"]} == {"n1", "n2", "n3"}
        assert {m["ApiUrl"] for m in status["Members"]} == set(cluster.urls)
        assert [m["Role"] for m in status["Members"]].count("leader") == 1
    survivor = _followers(cluster, leader)[0]
    for i in range(3):
        if i != survivor:
            cluster.nodes[i].kill()
    url = cluster.nodes[survivor].url
    deadline = time.monotonic() + 15
    ready = cluster.client.get(url + "/readyz")
    while ready.status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
        ready = cluster.client.get(url + "/readyz")
    assert ready.status_code == 503, ready.text
    assert ready.headers.get("retry-after")
    assert ready.json()["Ready"] is False
    assert cluster.client.get(url + "/healthz").status_code == 200
    status = cluster.status(survivor)
    assert status is not None and status["Ready"] is False


def test_leader_kill_keeps_roles_and_restarted_node_catches_up(cluster: Cluster) -> None:
    leader = cluster.leader_index()
    follower = _followers(cluster, leader)[0]
    _make_group(cluster, leader, "g", "00:00:04", ["a", "b"], reg_via=follower)
    before = _settle_roles(cluster, follower, "g")

    cluster.nodes[leader].kill()
    killed_at = time.monotonic()
    survivors = _followers(cluster, leader)
    # Heartbeat every T/4 through the survivors, alternating, through the election and for
    # longer than the new leader's grace plus T: any role flip would show.
    answers: list[tuple[float, str, int, dict[str, Any] | None]] = []
    turn = 0
    while time.monotonic() < killed_at + 8:
        for session in ("a", "b"):
            base = cluster.nodes[survivors[turn % 2]].url
            turn += 1
            try:
                response = _heartbeat(cluster.client, base, "g", session)
            except httpx.HTTPError:
                continue
            body = response.json() if response.status_code == 200 else None
            answers.append((time.monotonic() - killed_at, session, response.status_code, body))
        time.sleep(1.0)
    statuses = {code for _, _, code, _ in answers}
    assert statuses <= {200, 503}, answers
    served = [(s, (b["Role"], b["Epoch"])) for _, s, _, b in answers if b is not None]
    assert {s for s, _ in served} == {"a", "b"}, f"never served after the kill: {answers}"
    assert all(before[s] == answer for s, answer in served), f"before {before}, after {answers}"
    first_ok = min(t for t, _, code, _ in answers if code == 200)
    print(f"\n[leader kill] first heartbeat served {first_ok:.2f} s after the kill")

    # A write while the old leader is down, then the old leader returns as a follower.
    _make_group(cluster, survivors[0], "h", "00:01:00", ["x"], reg_via=survivors[1])
    cluster.nodes[leader].start()
    cluster.wait_ready(timeout=30, nodes=[leader])
    for group, sessions in (("g", {"a", "b"}), ("h", {"x"})):
        view = _group_view(cluster, leader, group)
        assert {s["Id"] for s in view["sessions"]} == sessions
    response = cluster.client.get(cluster.nodes[leader].url + f"{API}/groups")
    assert {g["Id"] for g in response.json()} == {"g", "h"}


def test_full_restart_keeps_groups_sessions_overrides_epochs(cluster: Cluster) -> None:
    leader = cluster.leader_index()
    follower = _followers(cluster, leader)[0]
    _make_group(cluster, 0, "g1", "00:01:00", ["a", "b"], reg_via=1)
    _make_group(cluster, 2, "g2", "00:01:00", ["a", "b"], reg_via=0)
    _settle_roles(cluster, follower, "g1")
    _settle_roles(cluster, follower, "g2")
    override = cluster.nodes[follower].url + f"{API}/groups/g2/clientsessions/b/roleoverride"
    _post(cluster, override, {"Value": "Primary", "ExpirationPeriod": "08:00:00"}, expect=200)
    before = {g: _durable(_group_view(cluster, leader, g)) for g in ("g1", "g2")}
    assert any(s[2] == 1 for s in before["g2"]["sessions"]), before

    for node in cluster.nodes:
        assert node.terminate() is not None, f"{node.node_id} did not exit"
        assert not node.alive
    for node in cluster.nodes:
        node.start()
    cluster.wait_ready(timeout=30, nodes=[0, 1, 2])
    for i in range(3):
        after = {g: _durable(_group_view(cluster, i, g)) for g in ("g1", "g2")}
        assert after == before, f"node {cluster.nodes[i].node_id}"


def test_sigterm_of_leader_hands_over_and_exits(cluster: Cluster) -> None:
    leader = cluster.leader_index()
    status = cluster.status(leader)
    assert status is not None
    term = status["Term"]
    started = time.monotonic()
    code = cluster.nodes[leader].terminate(timeout=15)
    assert code is not None and not cluster.nodes[leader].alive
    assert code != -signal.SIGKILL, "the process had to be killed: it did not exit on SIGTERM"
    successor = cluster.leader_index(timeout=15, exclude={leader})
    print(f"\n[SIGTERM leader] new leader known {time.monotonic() - started:.2f} s after SIGTERM")
    new_status = cluster.status(successor)
    assert new_status is not None and new_status["Term"] > term
    # It stepped down itself before exiting: a leader that just vanished never logs this.
    name = cluster.nodes[leader].node_id
    assert f"Raft state of {name}: leader -> follower" in cluster.tail_log(leader, 200)
