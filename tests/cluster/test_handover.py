"""Hand-overs under lost answers (issue 13): the new primary is never granted before the old
grant has expired on the old primary's clock, unless the old primary acknowledged.

A group with T = 4 s; adapter ``a`` (the primary) talks to the leader through a proxy that,
once the fault starts, drops every answer on the way back: its heartbeats still reach the
cluster, which renews or demotes it, but it hears nothing and keeps acting on its last grant
until that grant's send time + ValidFor. Then the role is moved by each of the hand-overs
(override, score drop, deletion). The history checker (tests/support/history.py) judges P1 on
the adapters' clock; the hand-over time is printed. On the code before this change the leader
released ``a``'s grant when its heartbeat arrived (or at deletion) and granted ``b`` seconds
before ``a``'s grant lapsed.
"""

from __future__ import annotations

import statistics
import time
from urllib.parse import urlsplit

import pytest
from support.clusterkit import Cluster
from support.history import PRIMARY, Fleet, History, Record, p1_violations
from support.replyproxy import ReplyProxy

pytestmark = pytest.mark.cluster

T = 4.0
GROUP = "h"
API = "/api/v1/clientfailover/groups"


def _create(cluster: Cluster) -> None:
    url = cluster.urls[0]
    response = cluster.client.post(url + API, json={"Id": GROUP, "FailoverTimeout": "00:00:04"})
    assert response.status_code in (200, 201), response.text
    for session in ("a", "b"):
        body = {"Id": session}
        response = cluster.client.post(f"{url}{API}/{GROUP}/clientsessions", json=body)
        assert response.status_code in (200, 201), response.text


def _first_primary(history: History, session: str, after: float, timeout: float) -> float | None:
    """Receive time of the first Primary answer ``session`` saw for a request sent after
    ``after`` (polling the recorded history)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [
            r.received
            for r in history.of((GROUP, session))
            if r.ok and r.role == PRIMARY and r.sent > after
        ]
        if found:
            return min(found)
        time.sleep(0.02)
    return None


def _move_role(cluster: Cluster, fleet: Fleet, how: str) -> None:
    session = f"{cluster.urls[0]}{API}/{GROUP}/clientsessions"
    if how == "override":
        body = {"Value": "Primary"}
        response = cluster.client.post(f"{session}/b/roleoverride", json=body)
        assert response.status_code in (200, 204), response.text
    elif how == "score":
        fleet.adapters[(GROUP, "a")].score = 0
    else:
        response = cluster.client.delete(f"{session}/a")
        assert response.status_code in (200, 204), response.text


def _last_grant_end(records: list[Record]) -> float:
    """When the last Primary answer ``a`` actually received lapses on its own clock."""
    return max(
        r.sent + (r.valid_for or 0.0)
        for r in records
        if r.key == (GROUP, "a") and r.ok and r.role == PRIMARY
    )


@pytest.mark.parametrize("how", ["override", "score", "deletion"])
def test_hand_over_with_lost_answers_waits_for_the_old_grant(cluster: Cluster, how: str) -> None:
    _create(cluster)
    leader = urlsplit(cluster.nodes[cluster.leader_index()].url)
    history = History()
    with (
        ReplyProxy(leader.hostname or "", leader.port or 0) as proxy,
        Fleet(cluster.urls, history) as fleet,
    ):
        fleet.add(GROUP, "a", T / 2, score=60, urls=[proxy.url])
        fleet.add(GROUP, "b", T / 2, score=50)
        assert _first_primary(history, "a", 0.0, 10) is not None, history.snapshot()[-5:]
        proxy.drop_replies = True
        moved_at = time.monotonic()
        _move_role(cluster, fleet, how)
        granted = _first_primary(history, "b", moved_at, 4 * T)
    records = history.snapshot()
    violations = p1_violations(records)
    assert granted is not None, [r for r in records if r.session == "b"][-5:]
    old_end = _last_grant_end(records)
    print(
        f"\n[{how}, answers to the old primary lost] b granted {granted - moved_at:.2f} s after "
        f"the hand-over began; a's last grant lapsed {old_end - moved_at:.2f} s after it"
    )
    assert not violations, "\n".join(map(str, violations))
    assert granted >= old_end


def _hand_over_seconds(cluster: Cluster, agent: bool, trials: int) -> list[float]:
    """Override hand-overs back and forth between a and b, without faults."""
    history = History()
    seconds = []
    with Fleet(cluster.urls, history) as fleet:
        fleet.add(GROUP, "a", T / 2, agent=agent)
        fleet.add(GROUP, "b", T / 2, agent=agent)
        holder = "a" if _first_primary(history, "a", 0.0, 3) else "b"
        deadline = time.monotonic() + 10
        while _first_primary(history, holder, 0.0, 0.1) is None and time.monotonic() < deadline:
            holder = "b" if holder == "a" else "a"
        for _ in range(trials):
            target = "b" if holder == "a" else "a"
            url = f"{cluster.urls[0]}{API}/{GROUP}/clientsessions/{target}/roleoverride"
            started = time.monotonic()
            response = cluster.client.post(url, json={"Value": "Primary"})
            assert response.status_code in (200, 204), response.text
            granted = _first_primary(history, target, started, 4 * T)
            assert granted is not None
            seconds.append(granted - started)
            holder = target
    assert not p1_violations(history.snapshot())
    return seconds


def test_hand_over_time_aveva_adapters_and_our_agent(cluster: Cluster) -> None:
    """What waiting for the old grant costs (docs/safety.md): AVEVA-style adapters never
    acknowledge, so the new primary waits for the old grant to lapse (up to T + margin after
    its last renewal); our agent acknowledges the demotion and the role moves in round trips.
    Printed, not asserted (timings on a shared machine)."""
    _create(cluster)
    aveva = _hand_over_seconds(cluster, agent=False, trials=3)
    ours = _hand_over_seconds(cluster, agent=True, trials=3)
    print(
        f"\n[override hand-over, T = {T:g} s] AVEVA-style median {statistics.median(aveva):.2f} s "
        f"({', '.join(f'{s:.2f}' for s in aveva)}); our agent median "
        f"{statistics.median(ours):.2f} s ({', '.join(f'{s:.2f}' for s in ours)})"
    )
