"""The leader's steady-state fast path (liveness.Coordinator._is_steady) and the checkpoint deltas.

The Coordinator runs against a fake Replicator that applies engine commands at once (the
engine's apply is the real one), with fake monotonic and wall clocks. The fast path skips
``engine.evaluate`` for a heartbeat that changes nothing a decision depends on; the oracle here
runs ``evaluate`` anyway each time the fast path is taken and fails if it would have decided
something. Randomised schedules of heartbeats (score changes, our agent's acknowledgements,
silences longer than T, overrides, registrations and deletions) cover the shapes it must refuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from cfs_cluster import engine
from cfs_cluster.cluster.liveness import Coordinator
from cfs_cluster.errors import CfsError
from cfs_cluster.protocol.heartbeat import HeartbeatReport
from cfs_cluster.protocol.wire import TICKS_PER_SECOND, ClientRole, RoleOverride
from cfs_cluster.settings import FailoverSettings, RaftSettings

T = 4  # FailoverTimeout, seconds
BASE = 638_400_000_000_000_000  # UTC ticks at fake time 0


class FakeReplicator:
    """What the Coordinator uses of the Replicator: a state, submit, term, lease."""

    def __init__(self) -> None:
        self.state = engine.ClusterState()
        self.submitted: list[engine.Command] = []
        self._term = 1

    @contextmanager
    def read(self) -> Iterator[engine.ClusterState]:
        yield self.state

    async def submit(self, command: engine.Command, timeout: float) -> engine.Result:
        self.submitted.append(command)
        return engine.apply(self.state, command)

    def term(self) -> int:
        return self._term

    def is_leader(self) -> bool:
        return True

    def has_lease(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def mono(self) -> float:
        return self.t

    def wall(self) -> float:
        # Unix seconds whose ticks are BASE + t: the engine only compares them.
        return (BASE - 621_355_968_000_000_000) / TICKS_PER_SECOND + self.t


class Oracle(Coordinator):
    """Every fast-path answer checked against the full evaluation it skipped."""

    fast = 0

    def _is_steady(self, group: engine.Group, sender: str | None) -> bool:
        steady = super()._is_steady(group, sender)
        if steady:
            self.fast += 1
            was_pending = sender is not None and group.pending == sender
            decision = engine.evaluate(group, self._view(group, sender, was_pending))
            assert decision is None, f"the fast path skipped a decision: {decision}"
        return steady


async def _leader(clock: Clock, cls: type[Coordinator] = Oracle) -> tuple[Any, FakeReplicator]:
    replicator = FakeReplicator()
    coordinator = cls(
        replicator,  # type: ignore[arg-type]
        FailoverSettings(),
        RaftSettings(),
        request_timeout=1.0,
        clock=clock.mono,
        wall=clock.wall,
    )
    coordinator._raft_state_changed("leader")
    assert coordinator._opening is not None
    await coordinator._opening
    assert coordinator.can_decide()
    return coordinator, replicator


def _setup(replicator: FakeReplicator, groups: int, sessions: int) -> None:
    for g in range(groups):
        replicator.state.groups.pop(f"g{g}", None)
        engine.apply(
            replicator.state,
            engine.CreateGroup(f"c{g}", f"g{g}", None, None, T * TICKS_PER_SECOND),
        )
        for s in range(sessions):
            engine.apply(
                replicator.state, engine.RegisterSession(f"r{g}{s}", f"g{g}", f"s{s}", None)
            )


def _report(
    group: str, session: str, score: float, held: tuple[ClientRole, int] | None = None
) -> HeartbeatReport:
    role, epoch = held if held else (None, None)
    return HeartbeatReport(group, session, score, None, None, role, epoch)


async def _granted(coordinator: Coordinator, session: str, score: float) -> Any:
    """Heartbeat ``session`` of g0 until it is Primary (the candidate confirms, rule 6)."""
    for _ in range(3):
        answer = await coordinator.heartbeat(_report("g0", session, score))
        if answer.role == ClientRole.Primary:
            return answer
    raise AssertionError("never granted")


def test_steady_heartbeats_take_the_fast_path_and_answer_the_same() -> None:
    async def scenario() -> None:
        clock = Clock()
        coordinator, replicator = await _leader(clock)
        _setup(replicator, 1, 2)
        first = await _granted(coordinator, "s0", 100)
        await coordinator.heartbeat(_report("g0", "s1", 50))
        assert first.role == ClientRole.Primary
        decisions = len(replicator.submitted)
        for _ in range(20):
            clock.t += T / 2
            a = await coordinator.heartbeat(_report("g0", "s0", 100))
            b = await coordinator.heartbeat(_report("g0", "s1", 50))
            assert (a.role, b.role) == (ClientRole.Primary, ClientRole.Secondary)
            assert a.epoch == first.epoch and a.valid_for > 0
        assert len(replicator.submitted) == decisions  # nothing decided in steady state
        assert coordinator.fast >= 38  # every heartbeat after the grant

    asyncio.run(scenario())


def test_a_changed_score_or_a_silence_runs_the_full_evaluation() -> None:
    async def scenario() -> None:
        clock = Clock()
        coordinator, replicator = await _leader(clock)
        _setup(replicator, 1, 2)
        await _granted(coordinator, "s0", 50)
        await coordinator.heartbeat(_report("g0", "s1", 50))
        clock.t += 1
        await coordinator.heartbeat(_report("g0", "s1", 50))
        steady_hits = coordinator.fast
        # The secondary now outscores the primary: a hand-over starts at once.
        answer = await coordinator.heartbeat(_report("g0", "s1", 90))
        assert coordinator.fast == steady_hits
        assert answer.role == ClientRole.PendingPrimary
        assert replicator.state.groups["g0"].releasing == "s0"

    asyncio.run(scenario())


def test_a_primary_silent_past_the_timeout_is_noticed_by_the_secondary_heartbeat() -> None:
    async def scenario() -> None:
        clock = Clock()
        coordinator, replicator = await _leader(clock)
        _setup(replicator, 1, 2)
        await _granted(coordinator, "s0", 100)
        await coordinator.heartbeat(_report("g0", "s1", 50))
        for _ in range(4):  # only the secondary heartbeats from here on
            clock.t += T / 2 + 0.1
            await coordinator.heartbeat(_report("g0", "s1", 50))
        group = replicator.state.groups["g0"]
        assert group.primary != "s0" or group.pending == "s1" or group.releasing == "s0"

    asyncio.run(scenario())


@pytest.mark.parametrize("seed", range(12))
def test_random_schedules_never_skip_a_decision(seed: int) -> None:
    rng = random.Random(seed)

    async def scenario() -> None:
        clock = Clock()
        coordinator, replicator = await _leader(clock)
        _setup(replicator, 3, 3)
        held: dict[tuple[str, str], tuple[ClientRole, int]] = {}
        scores = {(f"g{g}", f"s{s}"): 50.0 for g in range(3) for s in range(3)}
        for _ in range(400):
            g, s = f"g{rng.randrange(3)}", f"s{rng.randrange(3)}"
            roll = rng.random()
            if roll < 0.1:
                scores[(g, s)] = rng.choice([10.0, 50.0, 90.0])
            elif roll < 0.13:
                session = replicator.state.groups[g].sessions.get(s)
                value = rng.choice([RoleOverride.Primary, RoleOverride.Off])
                if session is not None:
                    await replicator.submit(
                        engine.SetOverride(f"o{rng.random()}", g, s, value, None), 1
                    )
            elif roll < 0.15:
                await replicator.submit(engine.DeleteSession(f"d{rng.random()}", g, s), 1)
            elif roll < 0.17:
                await replicator.submit(engine.RegisterSession(f"n{rng.random()}", g, s, None), 1)
            clock.t += rng.choice([0.0, 0.05, 0.5, T / 2, T + 0.5])
            if s not in replicator.state.groups[g].sessions:
                continue
            group = replicator.state.groups[g]
            if rng.random() < 0.3:  # our agent: say what it holds
                if group.primary == s:
                    held[(g, s)] = (
                        rng.choice([ClientRole.Primary, ClientRole.Secondary]),
                        group.epoch,
                    )
                else:
                    held[(g, s)] = (ClientRole.Secondary, group.epoch)
            with contextlib.suppress(CfsError):  # e.g. a session deleted meanwhile
                await coordinator.heartbeat(_report(g, s, scores[(g, s)], held.get((g, s))))
            if rng.random() < 0.2:
                await coordinator._sweep_group(g)
        assert coordinator.fast > 0

    asyncio.run(scenario())


def _checkpoints(replicator: FakeReplicator) -> list[engine.SaveCheckpoint]:
    return [c for c in replicator.submitted if isinstance(c, engine.SaveCheckpoint)]


def _saved(replicator: FakeReplicator) -> list[tuple[str, str]]:
    last = _checkpoints(replicator)[-1]
    return sorted((g, s) for g, s, _ in last.heartbeats)


def test_checkpoints_carry_only_changed_facts_and_a_refresh_per_timeout() -> None:
    async def scenario() -> None:
        clock = Clock()
        coordinator, replicator = await _leader(clock)
        _setup(replicator, 2, 2)
        for g in ("g0", "g1"):
            for _ in range(2):
                await coordinator.heartbeat(_report(g, "s0", 100))
            await coordinator.heartbeat(_report(g, "s1", 50))
        await coordinator._flush_checkpoint()
        assert len(_saved(replicator)) == 4  # never checkpointed: all of them
        count = len(_checkpoints(replicator))
        clock.t += T / 2 - 0.5
        for g in ("g0", "g1"):
            await coordinator.heartbeat(_report(g, "s0", 100))
            await coordinator.heartbeat(_report(g, "s1", 50))
        await coordinator._flush_checkpoint()
        assert len(_checkpoints(replicator)) == count  # liveness only: nothing to replicate
        await coordinator.heartbeat(_report("g1", "s1", 60))
        await coordinator._flush_checkpoint()
        assert _saved(replicator) == [("g1", "s1")]  # the changed score, alone
        clock.t += T / 2 + 0.5  # a FailoverTimeout after the first checkpoint
        for g in ("g0", "g1"):
            await coordinator.heartbeat(_report(g, "s0", 100))
            await coordinator.heartbeat(_report(g, "s1", 50 if g == "g0" else 60))
        await coordinator._flush_checkpoint()
        assert _saved(replicator) == [("g0", "s0"), ("g0", "s1"), ("g1", "s0")]

    asyncio.run(scenario())


def test_a_checkpoint_is_bounded_and_the_rest_follows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cfs_cluster.cluster.checkpoint.MAX_CHECKPOINT_RECORDS", 3)

    async def scenario() -> None:
        clock = Clock()
        coordinator, replicator = await _leader(clock)
        _setup(replicator, 2, 2)
        for g in ("g0", "g1"):
            for s in ("s0", "s1"):
                await coordinator.heartbeat(_report(g, s, 50))
        await coordinator._flush_checkpoint()
        await coordinator._flush_checkpoint()
        first, second = _checkpoints(replicator)[-2:]
        assert len(first.heartbeats) == 3 and len(second.heartbeats) == 1
        saved = {(g, s) for c in (first, second) for g, s, _ in c.heartbeats}
        assert len(saved) == 4

    asyncio.run(scenario())


def test_a_new_leader_seeded_from_delta_checkpoints_keeps_every_role() -> None:
    """P2 across a leader change: the checkpoints a new leader starts from carry refreshes only
    once per FailoverTimeout; every live session still counts as heard, and no role moves."""

    async def scenario() -> None:
        clock = Clock()
        old, replicator = await _leader(clock)
        groups = 4
        _setup(replicator, groups, 2)
        names = [f"g{g}" for g in range(groups)]
        for g in names:
            for _ in range(2):
                await old.heartbeat(_report(g, "s0", 100))
        # Steady state for a while: heartbeats every T/2, a checkpoint every 2 s.
        for step in range(4 * T):
            clock.t += 0.5
            g = names[step % groups]
            await old.heartbeat(_report(g, "s0", 100))
            await old.heartbeat(_report(g, "s1", 50))
            if step % 4 == 3:
                await old._flush_checkpoint()
        roles = {
            g: (replicator.state.groups[g].primary, replicator.state.groups[g].epoch) for g in names
        }
        # The old leader is killed: no last checkpoint. A new leader of term 2 opens its term.
        replicator._term = 2
        new = Oracle(
            replicator,  # type: ignore[arg-type]
            FailoverSettings(),
            RaftSettings(),
            request_timeout=1.0,
            clock=clock.mono,
            wall=clock.wall,
        )
        clock.t += 1.5  # the election
        new._raft_state_changed("leader")
        assert new._opening is not None
        await new._opening
        assert all((g, s) in new._heard for g in names for s in ("s0", "s1"))
        decided = len([c for c in replicator.submitted if isinstance(c, engine.Decide)])
        for step in range(4 * T):
            clock.t += 0.5
            g = names[step % groups]
            answers = [
                await new.heartbeat(_report(g, s, 100 if s == "s0" else 50)) for s in ("s0", "s1")
            ]
            assert [a.role for a in answers] == [ClientRole.Primary, ClientRole.Secondary]
            await new._sweep_group(g)
        after = {
            g: (replicator.state.groups[g].primary, replicator.state.groups[g].epoch) for g in names
        }
        assert after == roles
        assert len([c for c in replicator.submitted if isinstance(c, engine.Decide)]) == decided

    asyncio.run(scenario())
