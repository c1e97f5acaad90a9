"""`/metrics` scraped with Prometheus' own text parser; the decision history of a group.

A 3-node cluster; one group, two adapters; a role override forces a failover and a silent
primary causes another; the events endpoint (on any node) explains both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.clusterkit import Cluster

from cfs_cluster.ops.metrics import reason_category

pytestmark = pytest.mark.cluster

API = "/api/v1/clientfailover"
PRIMARY = 1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("obs"), size=3) as running:
        yield running


def _heartbeat(client: httpx.Client, base: str, group: str, session: str, score: float = 50) -> int:
    url = f"{base}{API}/groups/{group}/clientsessions/{session}/heartbeat"
    response = client.post(url, json={"FailoverScore": score}, timeout=5)
    assert response.status_code == 200, response.text
    role: int = response.json()["Role"]
    return role


def _until_primary(
    client: httpx.Client, base: str, group: str, want: str, others: list[str]
) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for other in others:
            _heartbeat(client, base, group, other)
        if _heartbeat(client, base, group, want) == PRIMARY:
            return
        time.sleep(0.05)
    raise AssertionError(f"{want} never became Primary")


def _events_until(
    client: httpx.Client, base: str, done: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """The group's events on one node, polled until ``done`` (replication is asynchronous)."""
    deadline = time.monotonic() + 5
    events: list[dict[str, Any]] = client.get(f"{base}{API}/groups/g/events").json()
    while not done(events) and time.monotonic() < deadline:
        time.sleep(0.05)
        events = client.get(f"{base}{API}/groups/g/events").json()
    return events


def _scrape(client: httpx.Client, url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = client.get(url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def _value(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    return sum(
        v for found, v in samples.get(name, []) if all(found.get(k) == x for k, x in labels.items())
    )


def test_events_explain_a_forced_and_a_stale_failover_and_metrics_count_them(
    cluster: Cluster,
) -> None:
    client, base = cluster.client, cluster.nodes[0].url
    assert (
        client.post(
            f"{base}{API}/groups", json={"Id": "g", "FailoverTimeout": "00:00:01"}
        ).status_code
        == 201
    )
    for session in ("a", "b"):
        assert (
            client.post(f"{base}{API}/groups/g/clientsessions", json={"Id": session}).status_code
            == 201
        )
    _until_primary(client, base, "g", "a", [])
    # Forced: an administrator overrides b to Primary; a is asked to step down and b is
    # granted once a's last grant has certainly lapsed (P1: a sends no acknowledgement).
    override = client.post(
        f"{base}{API}/groups/g/clientsessions/b/roleoverride", json={"Value": "Primary"}
    )
    assert override.status_code == 200, override.text
    _until_primary(client, base, "g", "b", ["a"])
    metrics_during_override = _scrape(client, base)
    cancel = client.post(
        f"{base}{API}/groups/g/clientsessions/b/roleoverride", json={"Value": "Off"}
    )
    assert cancel.status_code == 200
    # Stale: b goes silent; a (still heartbeating) takes over after FailoverTimeout + margin.
    _until_primary(client, base, "g", "a", [])

    for node in cluster.nodes:  # replicated: every node tells the same story
        events = _events_until(client, node.url, lambda e: bool(e) and e[-1]["NewPrimary"] == "a")
        stepped_down = next(e for e in events if e["OldPrimary"] == "a")
        assert stepped_down["NewPrimary"] is None and stepped_down["PendingPrimary"] == "b"
        assert "'a' is asked to step down" in stepped_down["Reason"], stepped_down
        forced = next(e for e in events if e["NewPrimary"] == "b")
        assert forced["OldPrimary"] is None and "override" in forced["Reason"].lower()
        assert "grant of 'a' has lapsed" in forced["Reason"], forced
        assert forced["Epoch"] >= 2 and forced["Time"].endswith("Z")
        assert set(forced["Scores"]) <= {"a", "b"}
        # The stale primary is released (P1): either its grant is freed first ("is stale"), or,
        # when the candidate was already pending and heartbeats then, handed over directly.
        stale = next(e for e in events if e["OldPrimary"] == "b")
        if stale["NewPrimary"] is None:
            assert "'b' is stale" in stale["Reason"] and stale["PendingPrimary"] == "a"
        else:
            assert stale["NewPrimary"] == "a" and "among live clients" in stale["Reason"]
        assert stale["Scores"].get("a") == 50, events
        assert events[-1]["NewPrimary"] == "a" and events[-1]["Epoch"] > forced["Epoch"]
    assert client.get(f"{base}{API}/groups/nope/events").status_code == 404
    assert client.get(f"{base}{API}/Groups/g/Events/").status_code == 200  # case-insensitive

    assert _value(metrics_during_override, "cfs_role_overrides_active") == 1
    samples = _scrape(client, base)
    assert _value(samples, "cfs_groups") == 1 and _value(samples, "cfs_sessions") == 2
    assert _value(samples, "cfs_groups_without_primary") == 0
    assert _value(samples, "cfs_role_overrides_active") == 0
    assert _value(samples, "cfs_role_changes_total", reason="role_override") >= 1
    released = _value(samples, "cfs_role_changes_total", reason="primary_stale")
    assert released + _value(samples, "cfs_role_changes_total", reason="highest_score") >= 1
    heartbeats = _value(samples, "cfs_heartbeats_total")
    assert heartbeats >= 4
    assert _value(samples, "cfs_heartbeat_latency_seconds_count") == heartbeats


def test_raft_metrics_on_every_node(cluster: Cluster) -> None:
    leaders = 0
    for node in cluster.nodes:
        samples = _scrape(cluster.client, node.url)
        leaders += int(_value(samples, "cfs_raft_state", state="leader"))
        assert _value(samples, "cfs_raft_term") >= 1
        assert (
            _value(samples, "cfs_raft_commit_index")
            >= _value(samples, "cfs_raft_applied_index")
            > 0
        )
        assert _value(samples, "cfs_ready") == 1
        for name in ("cfs_raft_apply_lag", "cfs_raft_commit_lag", "cfs_raft_leader_changes_total"):
            assert name in samples
    assert leaders == 1


def test_heartbeats_through_a_follower_count_as_relayed(cluster: Cluster) -> None:
    client = cluster.client
    follower = cluster.nodes[next(i for i in range(3) if i != cluster.leader_index())].url
    assert (
        client.post(
            f"{follower}{API}/groups", json={"Id": "r", "FailoverTimeout": "00:00:30"}
        ).status_code
        == 201
    )
    assert (
        client.post(f"{follower}{API}/groups/r/clientsessions", json={"Id": "x"}).status_code == 201
    )
    before = _value(_scrape(client, follower), "cfs_heartbeats_total", path="relayed")
    for _ in range(3):
        _heartbeat(client, follower, "r", "x")
    after = _value(_scrape(client, follower), "cfs_heartbeats_total", path="relayed")
    assert after - before == 3


@pytest.mark.parametrize(
    "reason, category",
    [
        ("Role override to Primary", "role_override"),
        ("Only one client in group", "only_client"),
        ("Primary 'a' is stale (no heartbeat for 1.3 s; FailoverTimeout 1 s)", "primary_stale"),
        ("FailoverScore 90 is higher than the primary's 10", "higher_score"),
        ("Client 'a' was deleted", "session_deleted"),
        ("something new", "other"),
    ],
)
def test_reasons_map_to_a_bounded_label_set(reason: str, category: str) -> None:
    assert reason_category(reason) == category
