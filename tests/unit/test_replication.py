"""cluster/replication.py at its pysyncobj seam: a fake SyncObj that exposes exactly what the
Replicator reads (term, commit and applied index, leader, peers, the transport, response
times), driven tick by tick. Real storage in a temporary data directory; no sockets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pysyncobj.config import FAIL_REASON

from cfs_cluster import engine
from cfs_cluster.cluster.replication import Replicator
from cfs_cluster.errors import Conflict, StorageUnavailable, Unavailable
from cfs_cluster.settings import RaftSettings
from cfs_cluster.storage.durable import STORAGE_REFUSED

SELF = "127.0.0.1:7001"


@dataclass(frozen=True)
class FakeNode:
    id: str


@dataclass
class FakeTransport:
    sent: list[tuple[FakeNode, dict[str, Any]]] = field(default_factory=list)

    def send(self, node: FakeNode, message: dict[str, Any]) -> None:
        self.sent.append((node, message))


class FakeSyncObj:
    """The attributes and methods of pysyncobj.SyncObj that Replicator uses."""

    def __init__(self, others: list[str], leader: bool = True) -> None:
        self.otherNodes = [FakeNode(address) for address in others]
        self.leading = leader
        self.leader: FakeNode | None = FakeNode(SELF) if leader else None
        self.raftCurrentTerm = 3
        self.raftCommitIndex = 10
        self.raftLastApplied = 10
        self._SyncObj__transport = FakeTransport()
        self._SyncObj__lastResponseTime: dict[FakeNode, float] = {}
        self._SyncObj__raftMatchIndex: dict[FakeNode, int] = {}
        self.connected: set[str] = set()
        self.membership: list[tuple[str, str, Callable[[Any, int], None]]] = []

    def _isLeader(self) -> bool:
        return self.leading

    def _getLeader(self) -> FakeNode | None:
        return self.leader

    def isNodeConnected(self, node: FakeNode) -> bool:
        return node.id in self.connected

    def addNodeToCluster(self, address: str, callback: Callable[[Any, int], None]) -> None:
        self.membership.append(("add", address, callback))

    def removeNodeFromCluster(self, address: str, callback: Callable[[Any, int], None]) -> None:
        self.membership.append(("remove", address, callback))

    @property
    def sent(self) -> list[tuple[FakeNode, dict[str, Any]]]:
        return self._SyncObj__transport.sent


def replicator(tmp_path: Path, obj: FakeSyncObj, opened_term: int | None = 3) -> Replicator:
    rep = Replicator(
        SELF,
        tuple(n.id for n in obj.otherNodes),
        tmp_path / "data",
        RaftSettings(),
        None,
        on_applied=lambda command, result: None,
        on_state_changed=lambda old, new: None,
        fsync=False,
    )
    rep._obj = obj  # what start() would build: the seam under test
    if opened_term is not None:
        rep._store.state.opened_term = opened_term
    return rep


async def tick_until_done(rep: Replicator, task: asyncio.Task[Any]) -> Any:
    """Run the tick-thread callback (as pysyncobj would after each round) until ``task`` ends."""
    for _ in range(100):
        await asyncio.sleep(0)
        if task.done():
            break
        rep._on_tick()
    return await task


# --------------------------------------------------------------------------- ReadIndex


def test_a_single_voter_confirms_its_commit_index_without_probes(tmp_path: Path) -> None:
    obj = FakeSyncObj(others=[])
    rep = replicator(tmp_path, obj)

    async def scenario() -> int:
        return int(await tick_until_done(rep, asyncio.create_task(rep.read_index(1.0))))

    assert asyncio.run(scenario()) == 10
    assert obj.sent == []


def test_the_commit_index_counts_once_a_majority_acknowledged_the_probe(tmp_path: Path) -> None:
    obj = FakeSyncObj(others=["127.0.0.1:7002", "127.0.0.1:7003"])
    rep = replicator(tmp_path, obj)

    async def scenario() -> int:
        task = asyncio.create_task(rep.read_index(1.0))
        await asyncio.sleep(0)
        rep._on_tick()  # starts the round: one probe per voter, the commit index noted
        assert [(n.id, m["type"], m["term"]) for n, m in obj.sent] == [
            ("127.0.0.1:7002", "cfs_read_index", 3),
            ("127.0.0.1:7003", "cfs_read_index", 3),
        ]
        seq = obj.sent[0][1]["seq"]
        obj.raftCommitIndex = 12  # committed after the read arrived: not what it confirms
        rep._count_probe_ack(obj, FakeNode("127.0.0.1:7002"), {"term": 2, "seq": seq})
        for _ in range(5):
            await asyncio.sleep(0)
        assert not task.done()  # an answer from another term does not count
        rep._count_probe_ack(obj, FakeNode("127.0.0.1:7002"), {"term": 3, "seq": seq})
        return int(await tick_until_done(rep, task))

    assert asyncio.run(scenario()) == 10


def test_a_leader_whose_term_has_no_entry_yet_refuses_the_read(tmp_path: Path) -> None:
    obj = FakeSyncObj(others=["127.0.0.1:7002", "127.0.0.1:7003"])
    rep = replicator(tmp_path, obj, opened_term=2)  # OpenTerm of term 3 not applied yet

    async def scenario() -> None:
        await tick_until_done(rep, asyncio.create_task(rep.read_index(1.0)))

    with pytest.raises(Unavailable, match="majority"):
        asyncio.run(scenario())
    assert obj.sent == []


def test_a_round_in_flight_fails_when_leadership_is_lost(tmp_path: Path) -> None:
    obj = FakeSyncObj(others=["127.0.0.1:7002", "127.0.0.1:7003"])
    rep = replicator(tmp_path, obj)

    async def scenario() -> None:
        task = asyncio.create_task(rep.read_index(5.0))
        await asyncio.sleep(0)
        rep._on_tick()
        seq = obj.sent[0][1]["seq"]
        obj.leading = False
        rep._count_probe_ack(obj, FakeNode("127.0.0.1:7002"), {"term": 3, "seq": seq})
        await tick_until_done(rep, task)

    started = time.monotonic()
    with pytest.raises(Unavailable):
        asyncio.run(scenario())
    assert time.monotonic() - started < 1  # failed by the tick, not by the 5 s timeout


def test_a_follower_answers_a_probe_only_from_its_leader_in_its_term(tmp_path: Path) -> None:
    obj = FakeSyncObj(others=["127.0.0.1:7002"], leader=False)
    leader = FakeNode("127.0.0.1:7002")
    obj.leader = leader
    rep = replicator(tmp_path, obj)
    rep._answer_probe(obj, FakeNode("127.0.0.1:7009"), {"term": 3, "seq": 1})  # not its leader
    rep._answer_probe(obj, leader, {"term": 2, "seq": 2})  # an older term
    rep._answer_probe(obj, leader, {"term": 3, "seq": 3})
    assert obj.sent == [(leader, {"type": "cfs_read_index_ack", "term": 3, "seq": 3})]


def test_wait_applied_returns_once_the_index_is_applied(tmp_path: Path) -> None:
    obj = FakeSyncObj(others=[])
    rep = replicator(tmp_path, obj)

    async def scenario() -> None:
        task = asyncio.create_task(rep.wait_applied(12, 1.0))
        await asyncio.sleep(0)
        rep._on_tick()
        await asyncio.sleep(0)
        assert not task.done()
        obj.raftLastApplied = 12
        await tick_until_done(rep, task)

    asyncio.run(scenario())


def test_wait_applied_says_how_far_behind_this_node_is(tmp_path: Path) -> None:
    rep = replicator(tmp_path, FakeSyncObj(others=[]))
    with pytest.raises(Unavailable, match=r"applied 10 of 50"):
        asyncio.run(rep.wait_applied(50, 0.05))


# --------------------------------------------------------------------------- lease and status


def test_members_report_match_index_and_contact_only_on_the_leader(tmp_path: Path) -> None:
    obj = FakeSyncObj(others=["127.0.0.1:7003", "127.0.0.1:7002"])
    obj.connected = {"127.0.0.1:7002"}
    obj._SyncObj__raftMatchIndex.update({obj.otherNodes[0]: 4, obj.otherNodes[1]: 9})
    obj._SyncObj__lastResponseTime[obj.otherNodes[1]] = time.monotonic()
    rep = replicator(tmp_path, obj)
    members = rep.members()
    assert [(m.raft, m.connected, m.match_index) for m in members] == [
        ("127.0.0.1:7002", True, 9),
        ("127.0.0.1:7003", False, 4),
    ]
    assert members[0].last_contact is not None and members[1].last_contact is None
    assert rep.voters() == ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
    obj.leading = False
    assert {m.match_index for m in rep.members()} == {None}


# --------------------------------------------------------------------------- writes


def with_outcomes(rep: Replicator, outcomes: list[tuple[Any, int]]) -> list[engine.Command]:
    """Make the replicated call answer ``outcomes`` in turn (as pysyncobj's callback would)."""
    submitted: list[engine.Command] = []

    def apply_command(command: engine.Command, callback: Callable[[Any, int], None]) -> None:
        submitted.append(command)
        callback(*outcomes.pop(0))

    rep._store.apply_command = apply_command  # type: ignore[method-assign]
    return submitted


def test_submit_retries_an_outcome_that_is_safe_to_retry(tmp_path: Path) -> None:
    rep = replicator(tmp_path, FakeSyncObj(others=[]))
    done = engine.Result(engine.Code.OK)
    submitted = with_outcomes(
        rep, [(None, FAIL_REASON.LEADER_CHANGED), (done, FAIL_REASON.SUCCESS)]
    )
    command = engine.RemoveUser("r1", "alice")
    assert asyncio.run(rep.submit(command, 1.0)) == done
    assert submitted == [command, command]


def test_submit_refused_by_a_full_disk_is_storage_unavailable(tmp_path: Path) -> None:
    rep = replicator(tmp_path, FakeSyncObj(others=[]))
    with_outcomes(rep, [(None, STORAGE_REFUSED)])
    with pytest.raises(StorageUnavailable):
        asyncio.run(rep.submit(engine.RemoveUser("r1", "alice"), 1.0))


def test_submit_names_an_outcome_it_must_not_retry(tmp_path: Path) -> None:
    rep = replicator(tmp_path, FakeSyncObj(others=[]))
    submitted = with_outcomes(rep, [(None, FAIL_REASON.REQUEST_DENIED)])
    with pytest.raises(Unavailable, match="REQUEST_DENIED"):
        asyncio.run(rep.submit(engine.RemoveUser("r1", "alice"), 1.0))
    assert len(submitted) == 1


def test_a_denied_membership_change_is_a_conflict(tmp_path: Path) -> None:
    obj = FakeSyncObj(others=["127.0.0.1:7002"])
    rep = replicator(tmp_path, obj)

    async def change(add: bool, err: int) -> None:
        task = asyncio.create_task(rep.change_membership(add, "127.0.0.1:7003", 1.0))
        await asyncio.sleep(0)
        obj.membership[-1][2](None, err)
        await task

    asyncio.run(change(True, FAIL_REASON.SUCCESS))
    with pytest.raises(Conflict, match="another change"):
        asyncio.run(change(False, FAIL_REASON.REQUEST_DENIED))
    assert [(kind, address) for kind, address, _ in obj.membership] == [
        ("add", "127.0.0.1:7003"),
        ("remove", "127.0.0.1:7003"),
    ]


# --------------------------------------------------------------------------- batches


def able(rep: Replicator, *addresses: str) -> None:
    """Publish members at ``addresses`` that say they apply batches."""
    for i, address in enumerate(addresses):
        rep._store.state.members[f"n{i}"] = engine.Member(
            f"n{i}", address, f"http://{address}", "", (engine.BATCH_FEATURE,)
        )


def applying(rep: Replicator) -> list[engine.Command]:
    """The replicated call applies each entry to the store's state at once (a one-voter log)."""
    entries: list[engine.Command] = []
    replicated = rep._store.apply_command  # pysyncobj's wrapper: _doApply runs the apply itself

    def apply_command(command: engine.Command, callback: Callable[[Any, int], None]) -> None:
        entries.append(command)
        callback(replicated(command, _doApply=True), FAIL_REASON.SUCCESS)

    rep._store.apply_command = apply_command  # type: ignore[method-assign]
    return entries


def group(i: int) -> engine.CreateGroup:
    return engine.CreateGroup(f"r{i}", f"g{i}", None, None, 100_000_000)


async def submit_all(rep: Replicator, commands: list[engine.Command]) -> list[Any]:
    return await asyncio.gather(*(rep.submit(c, 1.0) for c in commands), return_exceptions=True)


def test_writes_of_one_loop_turn_go_as_one_batch_once_every_voter_applies_them(
    tmp_path: Path,
) -> None:
    rep = replicator(tmp_path, FakeSyncObj(others=["127.0.0.1:7002", "127.0.0.1:7003"]))
    able(rep, SELF, "127.0.0.1:7002", "127.0.0.1:7003")
    applied: list[engine.Command] = []
    rep._store.on_applied = lambda command, result: applied.append(command)
    entries = applying(rep)
    missing = engine.DeleteGroup("r9", "nosuch")
    commands: list[engine.Command] = [group(1), group(2), missing]
    results = asyncio.run(submit_all(rep, commands))
    assert [type(e) for e in entries] == [engine.Batch]
    assert entries[0].commands == tuple(commands)  # type: ignore[attr-defined]
    assert [r.code for r in results[:2]] == [engine.Code.CREATED] * 2
    assert results[2].code == engine.Code.GROUP_NOT_FOUND  # its own result, not the batch's
    assert applied == commands  # the apply hooks saw each command, in order
    assert sorted(rep._store.state.groups) == ["g1", "g2"]


def test_no_batch_while_a_voter_has_not_said_it_applies_them(tmp_path: Path) -> None:
    """A member of an earlier release publishes no features: it could not apply a Batch."""
    rep = replicator(tmp_path, FakeSyncObj(others=["127.0.0.1:7002", "127.0.0.1:7003"]))
    able(rep, SELF, "127.0.0.1:7002")  # 7003 has not published (or is of an older release)
    entries = applying(rep)
    results = asyncio.run(submit_all(rep, [group(1), group(2)]))
    assert [type(e) for e in entries] == [engine.CreateGroup, engine.CreateGroup]
    assert [r.code for r in results] == [engine.Code.CREATED] * 2


def test_a_failed_batch_fails_each_of_its_commands(tmp_path: Path) -> None:
    rep = replicator(tmp_path, FakeSyncObj(others=[]))
    able(rep, SELF)
    submitted = with_outcomes(rep, [(None, FAIL_REASON.REQUEST_DENIED)])
    results = asyncio.run(submit_all(rep, [group(1), group(2)]))
    assert [type(e) for e in submitted] == [engine.Batch]
    assert all(isinstance(r, Unavailable) and "REQUEST_DENIED" in r.reason for r in results)


def test_a_batch_is_applied_as_its_commands_one_by_one(tmp_path: Path) -> None:
    """Per command: its handler, its deduplication by request id, its own result; a batch
    inside a batch or a batch of something else is refused, and changes nothing."""
    state = engine.ClusterState()
    first = engine.apply(state, engine.Batch("b1", (group(1), group(2))))
    again = engine.apply(state, engine.Batch("b2", (group(1), group(3))))  # r1 retried
    assert [r.code for r in first.items] == [engine.Code.CREATED] * 2
    assert again.items[0] == first.items[0]  # deduplicated, as an entry of its own would be
    assert again.items[1].code == engine.Code.CREATED
    nested = engine.apply(state, engine.Batch("b3", (engine.Batch("b4", (group(4),)),)))
    assert nested.items[0].code == engine.Code.INVALID
    junk = engine.apply(state, engine.Batch("b5", ["not", "commands"]))  # type: ignore[arg-type]
    assert junk.code == engine.Code.INVALID and not junk.items
    odd = engine.apply(state, engine.Batch("b6", ("not a command",)))  # type: ignore[arg-type]
    assert odd.items[0].code == engine.Code.INVALID
    assert sorted(state.groups) == ["g1", "g2", "g3"]


def test_a_batch_leaves_the_state_its_commands_one_by_one_would(tmp_path: Path) -> None:
    """The same commands, as entries of their own and as one Batch: the same results and the
    same state (a decision of an old term refused by its fence either way)."""
    import copy

    def commands() -> list[engine.Command]:
        stale = engine.Decide("d1", "g1", 0, "a", None, False, "test", 0, term=2)
        return [group(1), group(2), engine.DeleteGroup("x1", "g2"), group(1), stale, group(3)]

    alone, batched = engine.ClusterState(), engine.ClusterState()
    alone.opened_term = batched.opened_term = 3
    one_by_one = [engine.apply(alone, c) for c in commands()]
    together = engine.apply(batched, engine.Batch("b", tuple(commands())))
    assert list(together.items) == one_by_one
    assert one_by_one[4].code != engine.Code.OK  # the fence held inside the batch too
    assert copy.deepcopy(alone.groups) == batched.groups
    assert list(alone.applied) == list(batched.applied)
