"""cluster/membership.py against a fake Replicator (voters, reachability, the changes it
commits): the safety checks refuse what would leave the cluster unable to commit, and the
changes that pass are committed one at a time. Adding a node probes its Raft port over a real
loopback socket."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from cfs_cluster import engine
from cfs_cluster.cluster.membership import HANDED_OVER, Membership, parse_raft_address
from cfs_cluster.cluster.replication import MemberStatus
from cfs_cluster.errors import BadRequest, Conflict, NotFound, Unavailable
from cfs_cluster.settings import RaftSettings

SELF = "127.0.0.1:7001"


class FakeReplicator:
    """The leader's view that Membership reads, and the changes it asks for."""

    self_address = SELF

    def __init__(self, voters: list[str], reachable: set[str]) -> None:
        self._voters = voters
        self.reachable = reachable
        self.leading = True
        self.leader: str | None = SELF
        self.state = engine.ClusterState()
        self.changes: list[tuple[bool, str]] = []
        self.submitted: list[engine.Command] = []
        self.fail_next_change: Exception | None = None

    def is_leader(self) -> bool:
        return self.leading

    def voters(self) -> list[str]:
        return sorted(self._voters)

    def leader_address(self) -> str | None:
        return self.leader

    def members(self) -> list[MemberStatus]:
        return [
            MemberStatus(v, v in self.reachable, 99, 0.1 if v in self.reachable else None)
            for v in self._voters
            if v != SELF
        ]

    def raw_status(self) -> dict[str, Any]:
        return {"commit_idx": 99}

    async def change_membership(self, add: bool, address: str, timeout: float) -> None:
        self.changes.append((add, address))
        if self.fail_next_change is not None:
            error, self.fail_next_change = self.fail_next_change, None
            raise error
        if add:
            self._voters.append(address)
        else:
            self._voters.remove(address)

    async def submit(self, command: engine.Command, timeout: float) -> engine.Result:
        self.submitted.append(command)
        return engine.Result(engine.Code.OK)

    async def hand_over_leadership(self, to: str | None, within: float) -> str | None:
        moved = to or next(v for v in self.voters() if v != SELF)
        self.leader, self.leading = moved, False
        return moved


def membership(replicator: FakeReplicator) -> Membership:
    return Membership(replicator, RaftSettings(), request_timeout=1.0)  # type: ignore[arg-type]


@pytest.fixture
def listening_raft_port() -> Iterator[str]:
    """A loopback port that accepts connections, standing in for a started node's Raft port."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield f"127.0.0.1:{server.getsockname()[1]}"


def closed_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"  # nothing listens once it is closed


@pytest.mark.parametrize("text", ["", "host", "host:", ":5690", "h:0", "h:70000", "a b:1", 5690])
def test_a_raft_address_must_be_host_and_port(text: object) -> None:
    with pytest.raises(BadRequest):
        parse_raft_address(text)


def test_a_node_whose_raft_port_answers_is_added(listening_raft_port: str) -> None:
    replicator = FakeReplicator([SELF, "127.0.0.1:7002"], {"127.0.0.1:7002"})
    change = asyncio.run(membership(replicator).add(f" {listening_raft_port} "))
    assert replicator.changes == [(True, listening_raft_port)]
    assert (change.action, change.raft, change.caught_up) == ("added", listening_raft_port, True)
    assert listening_raft_port in change.voters


def test_a_node_that_is_not_running_is_not_added() -> None:
    replicator = FakeReplicator([SELF, "127.0.0.1:7002"], {"127.0.0.1:7002"})
    address = closed_port()
    with pytest.raises(Conflict, match="not reachable"):
        asyncio.run(membership(replicator).add(address))
    assert replicator.changes == []


def test_a_member_is_not_added_twice() -> None:
    replicator = FakeReplicator([SELF, "127.0.0.1:7002"], {"127.0.0.1:7002"})
    with pytest.raises(Conflict, match="already a member"):
        asyncio.run(membership(replicator).add("127.0.0.1:7002"))


def test_only_the_leader_changes_membership() -> None:
    replicator = FakeReplicator([SELF, "127.0.0.1:7002"], {"127.0.0.1:7002"})
    replicator.leading = False
    with pytest.raises(Unavailable, match="no longer the Raft leader"):
        asyncio.run(membership(replicator).remove("127.0.0.1:7002"))


def test_removal_needs_a_reachable_majority_of_the_remaining_members() -> None:
    voters = [SELF, "127.0.0.1:7002", "127.0.0.1:7003", "127.0.0.1:7004", "127.0.0.1:7005"]
    replicator = FakeReplicator(list(voters), {"127.0.0.1:7002"})
    # Without 7005: 4 remain, of which this node and 7002 are reachable — 2 of 4 is no majority.
    with pytest.raises(Conflict, match="only 2 are reachable"):
        asyncio.run(membership(replicator).remove("127.0.0.1:7005"))
    replicator.reachable.add("127.0.0.1:7003")
    change = asyncio.run(membership(replicator).remove("127.0.0.1:7005"))
    assert change.action == "removed" and "127.0.0.1:7005" not in change.voters
    assert [type(c) for c in replicator.submitted] == [engine.RemoveMember]


def test_a_member_is_named_by_node_id_or_raft_address() -> None:
    replicator = FakeReplicator([SELF, "127.0.0.1:7002", "127.0.0.1:7003"], {"127.0.0.1:7002"})
    replicator.state.members["n3"] = engine.Member("n3", "127.0.0.1:7003", "http://n3")
    change = asyncio.run(membership(replicator).remove("n3"))
    assert change.raft == "127.0.0.1:7003"
    with pytest.raises(NotFound, match="No cluster member 'n9'"):
        asyncio.run(membership(replicator).remove("n9"))


def test_the_last_member_cannot_be_removed() -> None:
    replicator = FakeReplicator([SELF], set())
    with pytest.raises(Conflict, match="last member"):
        asyncio.run(membership(replicator).remove(SELF))


def test_removing_the_leader_hands_leadership_over_first() -> None:
    others = {"127.0.0.1:7002", "127.0.0.1:7003"}
    replicator = FakeReplicator([SELF, *others], {"127.0.0.1:7002"})
    with pytest.raises(Conflict, match="only 1 are reachable"):  # it does not count itself
        asyncio.run(membership(replicator).remove(SELF))
    replicator.reachable = others
    change = asyncio.run(membership(replicator).remove(SELF))
    assert change.action == HANDED_OVER
    assert replicator.changes == []  # the new leader commits the removal
    assert change.leader == "127.0.0.1:7002"


def test_a_change_that_took_effect_before_a_leader_change_is_not_sent_again() -> None:
    replicator = FakeReplicator([SELF, "127.0.0.1:7002", "127.0.0.1:7003"], {"127.0.0.1:7002"})

    async def lost_answer(add: bool, address: str, timeout: float) -> None:
        replicator.changes.append((add, address))
        replicator._voters.remove(address)  # applied, but the answer was lost
        raise Unavailable("leader changed", retry_after=0.1)

    replicator.change_membership = lost_answer  # type: ignore[method-assign]
    change = asyncio.run(membership(replicator).remove("127.0.0.1:7003"))
    assert change.action == "removed"
    assert replicator.changes == [(False, "127.0.0.1:7003")]


def test_leadership_goes_only_to_a_reachable_member() -> None:
    replicator = FakeReplicator([SELF, "127.0.0.1:7002", "127.0.0.1:7003"], {"127.0.0.1:7002"})
    with pytest.raises(Conflict, match="not reachable"):
        asyncio.run(membership(replicator).transfer_leadership("127.0.0.1:7003"))
    change = asyncio.run(membership(replicator).transfer_leadership("127.0.0.1:7002"))
    assert (change.action, change.raft, change.leader) == (
        "transferred",
        "127.0.0.1:7002",
        "127.0.0.1:7002",
    )
