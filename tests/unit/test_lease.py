"""The leader's lease and the follower's leader contact (cfs_cluster/cluster/lease.py).

Fake clocks for the bookkeeping; three real in-process pysyncobj nodes for the clock-domain
check, with pysyncobj's own clock (CLOCK_MONOTONIC_RAW) offset by +-2 s from ours.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pysyncobj.syncobj
import pytest
from support.clusterkit import free_ports

from cfs_cluster.cluster.lease import SEQUENCE_KEY, LeaderContact, LeaseTracker
from cfs_cluster.cluster.replication import Replicator
from cfs_cluster.settings import RaftSettings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def append(term: int = 3) -> dict[str, Any]:
    return {"type": "append_entries", "term": term}


def answer(number: object) -> dict[str, Any]:
    return {"type": "next_node_idx", SEQUENCE_KEY: number}


def test_a_fresh_answer_confirms_the_message_it_answers() -> None:
    clock = Clock()
    lease = LeaseTracker(clock)
    sent = append()
    lease.stamp("f1", sent)
    clock.now += 0.01
    lease.observe("f1", answer(sent[SEQUENCE_KEY]), current_term=3)
    clock.now += 0.5
    assert lease.confirmed(["f1", "f2"], within=1.0) == 1
    clock.now += 0.5
    assert lease.confirmed(["f1", "f2"], within=1.0) == 0  # 1.0 s after the *send*


def test_answers_buffered_during_a_pause_do_not_renew_the_lease() -> None:
    """SIGSTOP for 3 s: the answer to a message sent before the pause is processed after it.
    pysyncobj stamps it 'now'; the lease counts the message's send time, 3 s ago."""
    clock = Clock()
    lease = LeaseTracker(clock)
    before = append()
    lease.stamp("f1", before)
    clock.now += 3.0  # paused
    lease.observe("f1", answer(before[SEQUENCE_KEY]), current_term=3)
    assert lease.confirmed(["f1"], within=1.0) == 0
    after = append()
    lease.stamp("f1", after)  # only a message sent after the pause, once answered, counts
    lease.observe("f1", answer(after[SEQUENCE_KEY]), current_term=3)
    assert lease.confirmed(["f1"], within=1.0) == 1


@pytest.mark.parametrize("number", [None, "7", 10**9, -1])
def test_answers_without_a_known_sequence_count_for_nothing(number: object) -> None:
    lease = LeaseTracker(Clock())
    lease.stamp("f1", append())
    lease.observe("f1", answer(number), current_term=3)
    assert lease.confirmed(["f1"], within=1.0) == 0


def test_a_new_term_forgets_earlier_confirmations() -> None:
    lease = LeaseTracker(Clock())
    sent = append()
    lease.stamp("f1", sent)
    lease.observe("f1", answer(sent[SEQUENCE_KEY]), current_term=3)
    lease.reset()
    assert lease.confirmed(["f1"], within=1.0) == 0


def test_a_follower_echoes_the_message_it_answers_and_nothing_else() -> None:
    lease = LeaseTracker(Clock())
    lease.observe("leader", {**append(term=5), SEQUENCE_KEY: 41}, current_term=5)
    reply = answer(None)
    del reply[SEQUENCE_KEY]
    lease.stamp("leader", reply)
    assert reply[SEQUENCE_KEY] == 41
    lease.delivered("leader")
    later: dict[str, Any] = {"type": "next_node_idx"}
    lease.stamp("leader", later)
    assert SEQUENCE_KEY not in later


def test_a_follower_echoes_nothing_for_a_deposed_leaders_message() -> None:
    lease = LeaseTracker(Clock())
    lease.observe("old", {**append(term=4), SEQUENCE_KEY: 9}, current_term=5)
    reply: dict[str, Any] = {"type": "next_node_idx"}
    lease.stamp("old", reply)
    assert SEQUENCE_KEY not in reply


def test_leader_contact_counts_only_the_current_leader_in_the_current_term() -> None:
    clock = Clock()
    contact = LeaderContact(clock)
    assert contact.age() is None  # never heard: a stale read shows no LastContact
    contact.observe("new", append(term=5), current_term=5)
    assert contact.heard_within("new", 5, 0.5)
    contact.observe("old", append(term=4), current_term=5)  # a deposed leader, ignored
    assert contact.heard_within("new", 5, 0.5)
    assert not contact.heard_within("old", 5, 0.5)
    assert not contact.heard_within("new", 6, 0.5)  # the term moved on
    clock.now += 0.6
    assert not contact.heard_within("new", 5, 0.5)
    assert contact.age() == pytest.approx(0.6)


# --------------------------------------------------------------------------- real pysyncobj


@pytest.fixture
def three_nodes(tmp_path: Path) -> Iterator[list[Replicator]]:
    ports = free_ports(3)
    addresses = [f"127.0.0.1:{p}" for p in ports]
    nodes = [
        Replicator(
            address,
            tuple(a for a in addresses if a != address),
            tmp_path / f"n{i}",
            RaftSettings(),
            None,
            lambda command, result: None,
            lambda old, new: None,
        )
        for i, address in enumerate(addresses)
    ]
    for node in nodes:
        node.start()
    try:
        yield nodes
    finally:
        for node in nodes:
            node.destroy()


@pytest.mark.parametrize("offset", [-2.0, 2.0])
def test_lease_is_right_whatever_clock_pysyncobj_reads(
    monkeypatch: pytest.MonkeyPatch, offset: float, three_nodes: list[Replicator]
) -> None:
    """pysyncobj's clock runs 2 s ahead of (or behind) ours: exactly one node holds the lease,
    followers see their leader, and a leader whose followers stop answering loses the lease
    within leader_fallback."""
    raw = pysyncobj.syncobj.monotonicTime
    monkeypatch.setattr(pysyncobj.syncobj, "monotonicTime", lambda: raw() + offset)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        leases = [n.has_lease() for n in three_nodes]
        if leases.count(True) == 1:
            break
        time.sleep(0.05)
    assert [n.has_lease() for n in three_nodes].count(True) == 1
    leader = next(n for n in three_nodes if n.has_lease())
    followers = [n for n in three_nodes if n is not leader]
    assert all(f.leader_connected() for f in followers)
    for follower in followers:
        follower.destroy()
    lost_at = time.monotonic()
    while leader.has_lease() and time.monotonic() < lost_at + 5:
        time.sleep(0.02)
    assert not leader.has_lease()
    print(f"\n[lease, pysyncobj clock {offset:+.0f} s] lost {time.monotonic() - lost_at:.2f} s "
          "after the followers stopped (leader_fallback 1 s)")  # fmt: skip
