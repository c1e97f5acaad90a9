"""Hand-overs under faults, the short deterministic subset of `make chaos` (issue 13 item 5).

Each test runs one fixed schedule of tests/support/chaoskit.py against one 3-node cluster in
network namespaces: the primary ``a``'s answers are dropped on the reply path (iptables in the
node namespaces; its heartbeats still reach the cluster) while the role moves to ``b`` by an
override, a score drop or a deletion, composed with a second fault — the leader paused or
partitioned right after deciding, the relaying follower paused, a flapping link, a wall-clock
jump. The checker (tests/support/history.py) must find no overlapping possible grants, and
``b`` must be granted only after ``a``'s last grant lapsed on ``a``'s clock.

With the engine's old release rule (a holder freed when its heartbeat arrives after the role
should move, i.e. when it is *sent* a Secondary answer, and at once on deletion) the first four
fail with a P1 overlap: ``b`` is granted while ``a`` still acts on a grant it renewed just
before (shown by patching ``decisions._free``, see the commit message). The flapping case
passed once with that patch (a leader change gives the new leader's grace either way).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest
from support.chaoskit import (
    API,
    JUMP_SECONDS,
    Outcome,
    Plan,
    Rig,
    T,
    create_group,
    make_rig,
    run_schedule,
    settle,
)
from support.history import PRIMARY, p1_violations
from support.netkit import unavailable_reason

from cfs_cluster.cluster.clock import REFRESH_SECONDS

_WHY = unavailable_reason()
pytestmark = [
    pytest.mark.cluster,
    pytest.mark.netns,
    pytest.mark.skipif(_WHY is not None, reason=_WHY or ""),
]


SKEW = 120.0  # seconds the receiving node's wall clock is ahead


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with make_rig(tmp_path_factory.mktemp("handover-faults")) as running:
        yield running


def _run(rig: Rig, number: int, hand_over: str, victim: str, faults: list[str]) -> Outcome:
    plan = Plan(
        seed=number,
        hand_over=hand_over,
        victim_role=victim,
        faults=["drop-replies", *faults],
        agent=False,
        fault_seconds=3.0,
        after_delay=0.0,
        after_decision=True,
    )
    return run_schedule(rig, number, plan)


def _check(rig: Rig, outcome: Outcome) -> None:
    settle(rig.history, outcome.group, rig.fleet.late_timeout + 5)
    records = [r for r in rig.history.snapshot() if r.group == outcome.group]
    assert outcome.moved is not None
    # The fault took hold: a heard no answer for a while after the hand-over began.
    silent = [r for r in records if r.session == "a" and outcome.moved < r.sent < outcome.moved + 1]
    assert silent and not any(r.ok for r in silent), silent
    violations = p1_violations(records)
    assert not violations, "\n".join(map(str, violations))
    assert outcome.granted is not None, [r for r in records if r.session == "b"][-5:]
    old_end = max(
        r.sent + (r.valid_for or 0.0)
        for r in records
        if r.session == "a" and r.ok and r.role == PRIMARY and r.valid_for
    )  # answers a saw in time; a late one it never acted on (the checker judges those)
    print(
        f"\n[{outcome.group} {outcome.plan.hand_over} under {outcome.what}] b granted "
        f"{outcome.granted - outcome.moved:.2f} s after the hand-over began; a's last grant "
        f"lapsed {old_end - outcome.moved:.2f} s after it"
    )
    assert outcome.granted >= old_end


def test_override_while_the_primarys_answers_are_dropped(rig: Rig) -> None:
    _check(rig, _run(rig, 1, "override", "leader", []))


def test_score_drop_then_the_leader_paused_right_after_deciding(rig: Rig) -> None:
    _check(rig, _run(rig, 2, "score", "leader", ["pause-leader"]))


def test_deletion_then_the_leader_partitioned_right_after_deciding(rig: Rig) -> None:
    _check(rig, _run(rig, 3, "deletion", "leader", ["partition-leader"]))


def test_override_with_a_paused_relaying_follower(rig: Rig) -> None:
    _check(rig, _run(rig, 4, "override", "follower", ["pause-follower"]))


def test_override_over_a_flapping_link_and_a_clock_jump(rig: Rig) -> None:
    _check(rig, _run(rig, 5, "override", "leader", ["flapping", "clock-jump"]))


def _override_of(rig: Rig, group: str, session: str) -> int:
    response = rig.call("GET", f"{API}/{group}/clientsessions/{session}")
    assert response.status_code == 200, response.text
    return int(response.json()["RoleOverride"])


def test_override_expiry_is_stamped_by_the_receiving_node_and_judged_by_the_leader(
    rig: Rig,
) -> None:
    """The one clock of a timed override (docs/safety.md, *Clocks*): its expiry is the
    receiving node's wall clock + ExpirationPeriod, stored in the log, and the leader lets it
    expire by its own wall clock. A skewed receiver shifts the expiry by its skew; a leader
    whose clock jumps ends it early; P1 never depends on either."""
    group = "clock"
    create_group(rig, group)
    rig.fleet.add(group, "a", T / 2, score=60)
    rig.fleet.add(group, "b", T / 2, offset=1, score=50)
    leader = rig.cluster.leader_index()
    follower = (leader + 1) % 3
    try:
        rig.set_clock(follower, SKEW)
        time.sleep(4 * REFRESH_SECONDS)  # the shim re-reads its file every REFRESH_SECONDS
        url = rig.cluster.nodes[follower].url + f"{API}/{group}/clientsessions/b/roleoverride"
        sent = time.time()
        body = {"Value": "Primary", "ExpirationPeriod": "00:00:05"}
        response = rig.cluster.client.post(url, json=body)
        assert response.status_code in (200, 204), response.text
        stamp = response.json()["RoleOverrideExpirationTime"].replace("Z", "+00:00")
        expiry = dt.datetime.fromisoformat(stamp).timestamp()
        assert abs(expiry - (sent + SKEW + 5)) < 2, (expiry - sent, response.json())
        deadline = sent + 7
        while time.time() < deadline:  # past the period on every true clock
            assert _override_of(rig, group, "b") == 1
            time.sleep(0.5)
        rig.set_clock(leader, JUMP_SECONDS)  # the leader's clock jumps past the expiry
        deadline = time.monotonic() + 10
        while _override_of(rig, group, "b") != 0:
            assert time.monotonic() < deadline, "the leader never let the override expire"
            time.sleep(0.1)
    finally:
        rig.set_clock(follower, 0)
        rig.set_clock(leader, 0)
        rig.fleet.crash(group, "a")
        rig.fleet.crash(group, "b")
    records = [r for r in rig.history.snapshot() if r.group == group]
    assert any(r.ok and r.session == "b" and r.role == PRIMARY for r in records)
    violations = p1_violations(records)
    assert not violations, "\n".join(map(str, violations))
