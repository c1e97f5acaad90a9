"""Pre-vote (cfs_cluster/cluster/prevote.py) on real in-process pysyncobj nodes over loopback.

Three members elect a leader; a fourth node whose --peers name them, outside the
configuration, dials them (its Raft address is the highest) for several election timeouts.
Without the pre-vote it raised its own term every timeout (and, once added, deposed the
leader: tests/cluster/test_membership_terms.py); with it nobody's term moves. The same with
pysyncobj's clock offset by +-2 s from ours: the pre-vote reads pysyncobj's clock.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pysyncobj.syncobj
import pytest
from support.clusterkit import free_ports

from cfs_cluster.cluster.replication import Replicator
from cfs_cluster.settings import RaftSettings

OUTSIDE_FOR = 3.0  # seconds: three times raft_max_timeout


def _replicator(address: str, peers: list[str], data_dir: Path) -> Replicator:
    return Replicator(
        address,
        tuple(p for p in peers if p != address),
        data_dir,
        RaftSettings(),
        None,
        lambda command, result: None,
        lambda old, new: None,
        fsync=False,
    )


@pytest.fixture
def members_and_outsider(tmp_path: Path) -> Iterator[tuple[list[Replicator], Replicator]]:
    ports = sorted(free_ports(4))  # the outsider gets the highest: it is the side that dials
    addresses = [f"127.0.0.1:{p}" for p in ports]
    members = [
        _replicator(a, addresses[:3], tmp_path / f"n{i}") for i, a in enumerate(addresses[:3])
    ]
    outsider = _replicator(addresses[3], addresses[:3], tmp_path / "n4")
    started: list[Replicator] = []
    try:
        for node in members:
            node.start()
            started.append(node)
        yield members, outsider
    finally:
        for node in [*started, outsider]:
            node.destroy()


@pytest.mark.parametrize("offset", [0.0, -2.0, 2.0])
def test_a_node_outside_the_configuration_raises_no_term(
    monkeypatch: pytest.MonkeyPatch,
    offset: float,
    members_and_outsider: tuple[list[Replicator], Replicator],
) -> None:
    raw = pysyncobj.syncobj.monotonicTime
    monkeypatch.setattr(pysyncobj.syncobj, "monotonicTime", lambda: raw() + offset)
    members, outsider = members_and_outsider

    def settled() -> bool:  # one leader, and every member in its term
        return [m.is_leader() for m in members].count(True) == 1 and len(
            {m.term() for m in members}
        ) == 1

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not settled():
        time.sleep(0.05)
    assert settled(), "no leader elected"
    terms = [m.term() for m in members]

    outsider.start()
    time.sleep(OUTSIDE_FOR)  # the fault is time passing: nothing to await

    assert [m.term() for m in members] == terms
    assert outsider.term() == 0, "the outside node campaigned"
    assert not outsider.is_leader()
