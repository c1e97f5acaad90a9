"""Unit tests of cfs_cluster.engine: commands, idempotency and the role rules of its docstring.

Most role tests drive a simulated leader (``Leader``) with a fake clock in seconds. Like
``liveness.Coordinator`` it records each heartbeat and every Primary answer it gives, then
evaluates and applies decisions until the group settles, and it checks P1 as an adapter would
see it: nobody is answered Primary while another session's last Primary answer may still be
acted on (validity T). An answer may be *lost* (``lost=True``): the adapter then keeps acting on
its previous grant, which is the case a Secondary answer must not be trusted to end. Adapters
are AVEVA-style (they say nothing of what they hold) unless ``agent=True``: our agent reports
``HeldRole``/``HeldEpoch`` in each heartbeat and acts on no grant it has dropped.
"""

from __future__ import annotations

import copy
import itertools
import pickle
from dataclasses import dataclass

import pytest

from cfs_cluster.engine import (
    ClusterState,
    Code,
    Command,
    CreateGroup,
    Decide,
    DeleteGroup,
    DeleteSession,
    Group,
    HeartbeatRecord,
    LivenessView,
    OpenTerm,
    RegisterMember,
    RegisterSession,
    Result,
    SaveCheckpoint,
    SetOverride,
    apply,
    dispatch,
    evaluate,
    failover,
    role_of,
)
from cfs_cluster.protocol.wire import TICKS_PER_SECOND, ClientRole, RoleOverride

PRIMARY, PENDING, SECONDARY = ClientRole.Primary, ClientRole.PendingPrimary, ClientRole.Secondary
T = 10.0  # FailoverTimeout of the test group, seconds
MARGIN = 0.3  # expiry margin after T before a silent holder is released
LAPSED = T + MARGIN + 0.01  # a grant given at t has certainly lapsed at t + LAPSED
BASE = 638_400_000_000_000_000  # UTC ticks of the fake clock's t = 0 (early 2024)
GROUP = "g"


def ticks(t: float) -> int:
    """UTC ticks of fake-clock time ``t`` (seconds)."""
    return BASE + round(t * TICKS_PER_SECOND)


class P1Violation(AssertionError):
    """Two sessions held a valid Primary answer at the same instant."""


class Leader:
    """A simulated Raft leader for one group: liveness in memory, decisions applied at once."""

    def __init__(self, timeout: float = T, margin: float = MARGIN, agent: bool = False) -> None:
        self.state = ClusterState()
        self.timeout, self.margin, self.agent = timeout, margin, agent
        self.heard: dict[str, float] = {}  # session -> fake time last heard
        self.scores: dict[str, float] = {}
        # The P1 oracle: session -> until when it may act on a Primary answer it was given.
        self.grants: dict[str, float] = {}
        # The leader's own record (Coordinator._granted): when it last answered the session
        # Primary. Only expiry or an acknowledgement frees that grant.
        self.granted: dict[str, float] = {}
        self.held: dict[str, tuple[ClientRole, int]] = {}  # what each agent last acted in
        self.acks: dict[str, int] = {}  # session -> epoch its latest heartbeat acknowledged
        self.term = 0
        self.decisions: list[Decide] = []
        self._ids = itertools.count()
        result = self.command(
            CreateGroup,
            group_id=GROUP,
            name=None,
            description=None,
            timeout=round(timeout * TICKS_PER_SECOND),
        )
        assert result.code == Code.CREATED

    # ------------------------------------------------------------ commands

    def command(self, kind: type[Command], **fields: object) -> Result:
        return apply(self.state, kind(request_id=f"req-{next(self._ids)}", **fields))

    def register(self, *session_ids: str) -> None:
        for sid in session_ids:
            assert (
                self.command(RegisterSession, group_id=GROUP, session_id=sid, name=sid).code
                == Code.CREATED
            )

    def delete(self, sid: str, t: float) -> Result:
        # Deleting a session does not stop its adapter: its grant stays in the P1 oracle.
        self.heard.pop(sid, None)
        self.scores.pop(sid, None)
        return self.command(DeleteSession, group_id=GROUP, session_id=sid, time=ticks(t))

    def override(self, sid: str, t: float, *, expires_at: float | None = None) -> Result:
        expiry = None if expires_at is None else ticks(expires_at)
        return self.command(
            SetOverride,
            group_id=GROUP,
            session_id=sid,
            value=RoleOverride.Primary,
            expiry=expiry,
            time=ticks(t),
        )

    def override_off(self, sid: str, t: float) -> Result:
        return self.command(
            SetOverride,
            group_id=GROUP,
            session_id=sid,
            value=RoleOverride.Off,
            expiry=None,
            time=ticks(t),
        )

    # ------------------------------------------------------------ liveness

    @property
    def group(self) -> Group:
        return self.state.groups[GROUP]

    @property
    def roles(self) -> tuple[str | None, str | None]:
        return self.group.primary, self.group.pending

    def view(
        self, t: float, heartbeat_from: str | None = None, sender_was_pending: bool = False
    ) -> LivenessView:
        return LivenessView(
            ages={sid: t - heard for sid, heard in self.heard.items()},
            scores=dict(self.scores),
            now=ticks(t),
            margin=self.margin,
            heartbeat_from=heartbeat_from,
            sender_was_pending=sender_was_pending,
            granted={sid: t - when for sid, when in self.granted.items()},
            acks=dict(self.acks),
            term=self.term,
        )

    def settle(self, t: float, heartbeat_from: str | None) -> None:
        """Evaluate and apply until nothing changes, as the leader's decide loop does."""
        was_pending = heartbeat_from is not None and self.group.pending == heartbeat_from
        for _ in range(5):
            decision = evaluate(self.group, self.view(t, heartbeat_from, was_pending))
            if decision is None:
                return
            result = apply(self.state, decision)
            assert result.code == Code.OK, result
            self.decisions.append(decision)
        raise AssertionError(f"group did not settle: {self.decisions[-5:]}")

    def heartbeat(self, sid: str, score: float, t: float, *, lost: bool = False) -> ClientRole:
        """One heartbeat from ``sid`` at ``t``; returns the role it is answered. ``lost``: the
        answer never reaches the adapter (it keeps acting on what it had)."""
        self.heard[sid] = t
        self.scores[sid] = score
        if self.agent:
            self._report_held(sid, t)
        self.settle(t, sid)
        role = role_of(self.group, sid)
        epoch = self.group.epoch
        if role == PRIMARY:
            holders = [other for other, until in self.grants.items() if other != sid and until > t]
            if holders:
                raise P1Violation(f"{sid} answered Primary at {t} while {holders} may still act")
            self.granted[sid] = t
            if not lost:
                self.grants[sid] = t + self.timeout
                self.held[sid] = (PRIMARY, epoch)
        elif not lost:
            self.grants.pop(sid, None)  # the adapter hears it and stops acting
            dropped = max(epoch, self.held.get(sid, (SECONDARY, -1))[1])
            self.held[sid] = (SECONDARY, dropped)
        return role

    def _report_held(self, sid: str, t: float) -> None:
        """Our agent's HeldRole/HeldEpoch: a lapsed grant is dropped on its own clock."""
        held = self.held.get(sid)
        if held is not None and held[0] == PRIMARY and self.grants.get(sid, -1.0) <= t:
            held = self.held[sid] = (SECONDARY, held[1])
            self.grants.pop(sid, None)
        if held is not None and held[0] != PRIMARY:
            self.acks[sid] = held[1]
        else:
            self.acks.pop(sid, None)

    def sweep(self, t: float) -> tuple[str | None, str | None]:
        """The leader's periodic evaluation, without a heartbeat; returns (primary, pending)."""
        self.settle(t, None)
        return self.roles


def pair(score_a: float = 100, score_b: float = 100) -> Leader:
    """A primary at t=0 (alone when it first reported), B registered then heard at t=1."""
    leader = Leader()
    leader.register("A")
    assert leader.heartbeat("A", score_a, 0) == PRIMARY
    leader.register("B")
    leader.heartbeat("B", score_b, 1)
    return leader


def trio(score_a: float, score_b: float, score_c: float) -> Leader:
    """A primary (alone when it first reported), then B and C registered and heard."""
    leader = Leader()
    leader.register("A")
    leader.heartbeat("A", score_a, 0)
    leader.register("B", "C")
    leader.heartbeat("B", score_b, 0.5)
    leader.heartbeat("C", score_c, 0.5)
    return leader


def snapshot(state: ClusterState) -> ClusterState:
    return copy.deepcopy(state)


# =========================================================================== rules


class TestLoneSession:
    """Rule 2: a group with one session promotes it straight to Primary when it is live."""

    @pytest.mark.parametrize(
        "score", [pytest.param(100, id="healthy"), pytest.param(0, id="score-0")]
    )
    def test_first_heartbeat_is_primary_at_once(self, score: float) -> None:
        leader = Leader()
        leader.register("A")
        assert leader.heartbeat("A", score, 0) == PRIMARY
        assert leader.group.epoch == 1
        assert [(d.primary, d.pending, d.reason) for d in leader.decisions] == [
            ("A", None, "Only one client in group")
        ]
        event = leader.group.events[-1]
        assert (event.old_primary, event.new_primary, event.epoch) == (None, "A", 1)
        assert event.reason == "Only one client in group"

    def test_registered_session_that_never_heartbeated_stays_secondary(self) -> None:
        leader = Leader()
        leader.register("A")
        assert leader.sweep(100) == (None, None)
        assert role_of(leader.group, "A") == SECONDARY
        assert leader.decisions == []

    def test_later_heartbeats_keep_primary_without_new_decisions(self) -> None:
        leader = Leader()
        leader.register("A")
        leader.heartbeat("A", 100, 0)
        for t in (5, 10, 15):
            assert leader.heartbeat("A", 100, t) == PRIMARY
        assert leader.group.epoch == 1
        assert len(leader.decisions) == 1

    @pytest.mark.parametrize(
        ("silent_for", "primary"),
        [
            pytest.param(T, "A", id="at-T-live"),
            pytest.param(T + MARGIN, "A", id="at-T-plus-margin-kept"),
            pytest.param(T + MARGIN + 0.01, None, id="past-T-plus-margin-released"),
        ],
    )
    def test_silent_lone_primary_is_released_only_after_timeout_and_margin(
        self, silent_for: float, primary: str | None
    ) -> None:
        leader = Leader()
        leader.register("A")
        leader.heartbeat("A", 100, 0)
        assert leader.sweep(silent_for) == (primary, None)

    def test_released_lone_session_is_granted_again_with_a_new_epoch(self) -> None:
        leader = Leader()
        leader.register("A")
        leader.heartbeat("A", 100, 0)
        leader.sweep(T + MARGIN + 1)
        assert leader.heartbeat("A", 100, 30) == PRIMARY
        assert leader.group.epoch == 2


class TestCandidate:
    """Rules 3 and 6: the highest live score is the candidate; PendingPrimary, then Primary."""

    def test_higher_score_is_pending_first_then_primary_after_the_hand_over(self) -> None:
        leader = pair(score_a=50, score_b=50)
        assert leader.heartbeat("B", 80, 2) == PENDING
        assert (leader.roles, leader.group.releasing) == ((None, "B"), "A")
        assert leader.heartbeat("A", 50, 3) == SECONDARY  # asked to step down
        assert leader.heartbeat("B", 80, 4) == PENDING  # A's grant of t=0 may still be acted on
        assert leader.heartbeat("B", 80, LAPSED) == PRIMARY
        assert (leader.roles, leader.group.releasing) == (("B", None), None)
        assert leader.group.epoch == 2

    def test_candidate_named_by_the_sweep_is_primary_on_its_next_heartbeat(self) -> None:
        leader = pair()
        leader.heartbeat("B", 100, 6)
        assert leader.sweep(T + MARGIN + 0.5) == (None, "B")
        assert role_of(leader.group, "B") == PENDING
        assert leader.heartbeat("B", 100, T + MARGIN + 0.6) == PRIMARY
        assert leader.group.epoch == 2

    def test_single_evaluation_names_a_fresh_candidate_pending_not_primary(self) -> None:
        """evaluate alone follows rule 6: one call makes the heartbeating candidate pending."""
        leader = Leader()
        leader.register("A", "B")
        leader.heard["A"], leader.scores["A"] = 0.0, 100
        decision = evaluate(leader.group, leader.view(0, "A"))
        assert decision is not None
        assert (decision.primary, decision.pending) == (None, "A")

    def test_candidate_whose_own_heartbeat_finds_the_grant_free_is_pending_first(self) -> None:
        leader = Leader()
        leader.register("A", "B")
        assert leader.heartbeat("A", 100, 0) == PENDING
        assert leader.heartbeat("A", 100, 0.1) == PRIMARY

    def test_the_heartbeat_that_names_the_candidate_does_not_also_confirm_it(self) -> None:
        leader = Leader()
        leader.register("A", "B")
        assert leader.heartbeat("A", 100, 0) == PENDING
        assert [(d.primary, d.pending) for d in leader.decisions] == [(None, "A")]
        assert leader.group.epoch == 0
        assert leader.heartbeat("A", 100, 0.1) == PRIMARY
        assert leader.group.epoch == 1

    @pytest.mark.parametrize(
        ("score_a", "score_b", "winner"),
        [
            pytest.param(100, 100, "A", id="tie-at-100-keeps-incumbent"),
            pytest.param(0, 0, "A", id="tie-at-0-keeps-incumbent"),
            pytest.param(100, 99.9, "A", id="lower-challenger"),
            pytest.param(1, 0, "A", id="cold-secondary-0-below-primary-1"),
            pytest.param(0, 1, "B", id="cold-secondary-1-above-failed-primary-0"),
            pytest.param(75, 100, "B", id="healthier-challenger"),
            pytest.param(50, 50.001, "B", id="strictly-higher-by-a-hair"),
        ],
    )
    def test_incumbent_keeps_the_role_while_live_and_not_outscored(
        self, score_a: float, score_b: float, winner: str
    ) -> None:
        leader = pair(score_a, score_b)
        for t in range(2, 13):  # both keep heartbeating, B first, past A's grant of t=0
            leader.heartbeat("B", score_b, t)
            leader.heartbeat("A", score_a, t + 0.5)
        assert leader.roles == (winner, None)
        if winner == "A":
            assert all(d.pending is None for d in leader.decisions), "B must never be pending"
            assert leader.group.epoch == 1
        else:
            assert leader.group.epoch == 2

    def test_ties_never_flip_back_to_a_recovered_ex_primary(self) -> None:
        leader = pair()
        leader.heartbeat("B", 100, 6)
        leader.sweep(T + MARGIN + 0.5)  # A silent since 0: released
        leader.heartbeat("B", 100, 11)  # B is primary now
        assert leader.heartbeat("A", 100, 12) == SECONDARY  # A is back with the same score
        for t in (13, 14, 15):
            assert leader.heartbeat("A", 100, t) == SECONDARY
            assert leader.heartbeat("B", 100, t + 0.5) == PRIMARY
        assert leader.group.pending is None

    @pytest.mark.parametrize(
        ("scores", "expected_pending"),
        [
            pytest.param({"B": 50, "C": 50}, "B", id="tie-goes-to-longest-registered"),
            pytest.param({"B": 50, "C": 60}, "C", id="highest-score-wins"),
            pytest.param({"B": 0, "C": 0}, "B", id="tie-at-zero"),
        ],
    )
    def test_candidate_after_a_dead_primary(
        self, scores: dict[str, float], expected_pending: str
    ) -> None:
        leader = trio(100, scores["B"], scores["C"])
        leader.heartbeat("C", scores["C"], 5)
        leader.heartbeat("B", scores["B"], 5)
        assert leader.sweep(T + MARGIN + 0.1) == (None, expected_pending)

    def test_pending_candidate_is_not_displaced_by_an_equal_score(self) -> None:
        leader = trio(10, 50, 40)
        leader.heartbeat("B", 50, 1)
        assert (leader.roles, leader.group.releasing) == ((None, "B"), "A")
        assert leader.heartbeat("C", 50, 2) == SECONDARY  # C ties B: B stays the candidate
        assert (leader.roles, leader.group.releasing) == ((None, "B"), "A")

    def test_pending_candidate_is_replaced_by_a_higher_one(self) -> None:
        leader = trio(10, 50, 40)
        leader.heartbeat("B", 50, 1)
        assert leader.heartbeat("C", 60, 2) == PENDING
        assert (leader.roles, leader.group.releasing) == ((None, "C"), "A")

    def test_pending_is_withdrawn_when_the_incumbent_recovers(self) -> None:
        leader = pair(score_a=50, score_b=50)
        assert leader.heartbeat("B", 80, 2) == PENDING
        assert leader.heartbeat("B", 40, 3) == SECONDARY
        assert leader.roles == ("A", None)
        assert leader.group.epoch == 1

    def test_checkpointed_score_counts_when_the_leader_has_not_heard_one(self) -> None:
        """A new leader starts from checkpointed scores (SaveCheckpoint) until sessions report."""
        leader = pair(score_a=50, score_b=50)
        record = HeartbeatRecord(
            score=90, last_data_processed=0, heartbeat_time=ticks(1), received_at=ticks(1)
        )
        apply(
            leader.state, SaveCheckpoint("ckpt", heartbeats=((GROUP, "B", record),), group_times=())
        )
        del leader.scores["B"]
        assert leader.sweep(2) == (None, "B")
        assert leader.group.releasing == "A"


class TestEpoch:
    """The epoch increases with every Primary grant and with nothing else."""

    def test_epoch_counts_grants_through_a_whole_life(self) -> None:
        leader = Leader()
        leader.register("A")
        leader.heartbeat("A", 100, 0)
        assert leader.group.epoch == 1  # lone promotion
        leader.register("B")
        leader.heartbeat("B", 100, 1)
        assert leader.heartbeat("A", 0, 2) == SECONDARY  # asked to step down: no grant
        assert leader.group.epoch == 1
        assert leader.heartbeat("B", 100, 3) == PENDING
        assert leader.heartbeat("B", 100, LAPSED) == PRIMARY  # hand-over once A's grant lapsed
        assert leader.group.epoch == 2
        b_silent = LAPSED + LAPSED
        leader.heartbeat("A", 100, b_silent - 1)
        leader.sweep(b_silent)  # B silent since its grant: released, A pending
        assert leader.group.epoch == 2
        leader.heartbeat("A", 100, b_silent + 0.1)
        assert leader.group.epoch == 3  # stale failover
        assert leader.override("B", b_silent + 1).epoch == 3  # A holds the grant: B pending
        leader.heartbeat("A", 100, b_silent + 2)
        assert leader.sweep(b_silent + 2 + LAPSED) == ("B", None)
        assert leader.group.epoch == 4  # override grant
        assert [e.epoch for e in leader.group.events if e.new_primary] == [1, 2, 3, 4]


class TestHandOver:
    """Rule 5 / P1: a grant is free only when acknowledged or certainly lapsed; a Secondary
    answer sent to the holder frees nothing, because the holder may never receive it."""

    def test_candidate_stays_pending_until_the_holders_last_grant_lapsed(self) -> None:
        leader = pair(score_a=50, score_b=50)
        leader.heartbeat("A", 50, 5)  # A's last Primary answer
        assert leader.heartbeat("B", 80, 6) == PENDING
        for t in (6.1, 6.2, 8.0, 11.0, 5 + T + MARGIN):
            assert leader.heartbeat("B", 80, t) == PENDING
            assert leader.sweep(t) == (None, "B")
        assert leader.heartbeat("A", 50, 15.4) == SECONDARY  # told, which frees nothing
        assert leader.heartbeat("B", 80, 5 + LAPSED) == PRIMARY

    def test_lost_secondary_answer_does_not_free_the_grant(self) -> None:
        """The issue's first case: A is told Secondary but never hears it (client timeout,
        relay died): it keeps acting on its grant of t=5 until t=15, so B must wait."""
        leader = pair(score_a=50, score_b=50)
        leader.heartbeat("A", 50, 5)
        assert leader.heartbeat("B", 80, 6) == PENDING
        assert leader.heartbeat("A", 50, 6.5, lost=True) == SECONDARY
        for t in (6.6, 7.0, 14.9):
            assert leader.heartbeat("B", 80, t) == PENDING  # P1Violation if it were Primary
        assert leader.heartbeat("B", 80, 5 + LAPSED) == PRIMARY

    def test_our_agent_acknowledges_the_demotion_and_the_hand_over_is_immediate(self) -> None:
        leader = pair(score_a=50, score_b=50)
        leader.agent = True
        assert leader.heartbeat("B", 80, 2) == PENDING
        assert leader.heartbeat("A", 50, 2.1) == SECONDARY  # heard: A drops epoch 1
        assert leader.heartbeat("A", 50, 2.2) == SECONDARY  # HeldRole Secondary, HeldEpoch 1
        assert "acknowledged" in leader.decisions[-1].reason
        assert leader.heartbeat("B", 80, 2.3) == PRIMARY
        assert leader.group.epoch == 2

    def test_an_acknowledgement_of_an_older_epoch_frees_nothing(self) -> None:
        leader = pair(score_a=50, score_b=50)
        assert leader.heartbeat("B", 80, 2) == PENDING
        leader.acks["A"] = 0  # e.g. a delayed heartbeat from before A's grant of epoch 1
        leader.heartbeat("A", 50, 2.1)
        assert leader.heartbeat("B", 80, 2.2) == PENDING

    def test_agent_whose_secondary_answer_is_lost_still_holds_until_it_lapses(self) -> None:
        leader = pair(score_a=50, score_b=50)
        leader.agent = True
        leader.heartbeat("A", 50, 5)
        assert leader.heartbeat("B", 80, 6) == PENDING
        leader.heartbeat("A", 50, 6.1, lost=True)  # it still reports HeldRole Primary next
        assert leader.heartbeat("A", 50, 6.2, lost=True) == SECONDARY
        assert leader.heartbeat("B", 80, 6.3) == PENDING
        assert leader.heartbeat("B", 80, 5 + LAPSED) == PRIMARY

    def test_agent_whose_grant_lapsed_on_its_clock_is_granted_anew(self) -> None:
        """Our agent acts on no grant it dropped; a primary that lost its grant on its own
        clock (heartbeats failed) but still holds the role gets a new epoch, not the old one."""
        leader = Leader(agent=True)
        leader.register("A")
        assert leader.heartbeat("A", 100, 0) == PRIMARY
        assert leader.heartbeat("A", 100, T + 0.1) == PRIMARY  # reported HeldRole Secondary
        assert leader.decisions[-1].regrant
        assert leader.group.epoch == 2

    def test_released_holder_becomes_the_candidate_again_when_the_pending_one_drops(self) -> None:
        leader = pair(score_a=50, score_b=50)
        leader.heartbeat("B", 80, 2)  # A asked to step down
        assert leader.heartbeat("A", 50, 3) == SECONDARY
        assert leader.heartbeat("B", 30, 4) == SECONDARY  # B drops below A before confirming
        assert leader.roles == ("A", None)  # A still held its grant: restored, same epoch
        assert leader.heartbeat("A", 50, 4.5) == PRIMARY
        assert leader.group.epoch == 1

    def test_never_two_holders_when_the_holder_goes_silent_mid_hand_over(self) -> None:
        leader = pair(score_a=50, score_b=50)
        leader.heartbeat("A", 50, 2)
        assert leader.heartbeat("B", 80, 3) == PENDING
        t = 3.0
        while t < 2 + T + MARGIN:  # B keeps confirming; A is silent since t=2
            t += 0.25
            role = leader.heartbeat("B", 80, t)
            assert role == (PRIMARY if t > 2 + T + MARGIN else PENDING), t
        assert leader.roles == ("B", None)

    def test_decision_of_an_earlier_term_is_refused(self) -> None:
        """Decisions are fenced by term: a deposed leader's decision, retried or forwarded
        into the next term, never applies after that term's OpenTerm."""
        leader = pair(score_a=50, score_b=50)
        leader.heartbeat("B", 80, 2)
        old = evaluate(leader.group, leader.view(LAPSED, "B", sender_was_pending=True))
        assert old is not None and old.primary == "B" and old.term == 0
        apply(leader.state, OpenTerm("term-1", term=1))
        before = snapshot(leader.state)
        result = apply(leader.state, old)
        assert result.code == Code.STALE and "term 1 is current" in result.detail
        assert leader.state == before
        leader.term = 1
        assert leader.heartbeat("B", 80, LAPSED) == PRIMARY


class TestStalePrimary:
    """Rule 4 and 5: live within T; a silent holder is released only after T + margin."""

    @pytest.mark.parametrize(
        ("silent_for", "roles"),
        [
            pytest.param(T - 0.1, ("A", None), id="within-T"),
            pytest.param(T, ("A", None), id="exactly-T-still-live"),
            pytest.param(T + 0.01, ("A", "B"), id="just-past-T-not-live-not-released"),
            pytest.param(T + MARGIN, ("A", "B"), id="exactly-T-plus-margin-not-released"),
            pytest.param(T + MARGIN + 0.01, (None, "B"), id="past-T-plus-margin-released"),
        ],
    )
    def test_sweep_releases_a_silent_primary_only_after_timeout_and_margin(
        self, silent_for: float, roles: tuple[str | None, str | None]
    ) -> None:
        leader = pair()
        leader.heartbeat("B", 100, silent_for - 0.5)  # B stays live
        assert leader.sweep(silent_for) == roles
        assert role_of(leader.group, "A") == (PRIMARY if roles[0] == "A" else SECONDARY)

    def test_release_is_recorded_with_a_stale_reason(self) -> None:
        leader = pair()
        leader.heartbeat("B", 100, T)
        leader.sweep(T + MARGIN + 0.1)
        release = leader.decisions[-1]
        assert (release.primary, release.pending) == (None, "B")
        assert "Primary 'A' is stale" in release.reason
        assert release.reason.endswith("among live clients")
        event = leader.group.events[-1]
        assert (event.old_primary, event.new_primary, event.pending) == ("A", None, "B")

    def test_live_secondary_is_primary_on_its_next_heartbeat_after_the_release(self) -> None:
        leader = pair()
        leader.heartbeat("B", 100, 5)
        leader.sweep(T + MARGIN + 0.1)
        assert leader.heartbeat("B", 100, T + MARGIN + 0.2) == PRIMARY
        assert leader.group.epoch == 2

    def test_primary_never_heard_by_this_leader_is_released(self) -> None:
        leader = pair()
        del leader.heard["A"]  # e.g. a leader that was never given a grace for it
        leader.grants.clear()
        leader.granted.clear()
        assert leader.sweep(2) == (None, "B")
        assert "never heard by this leader" in leader.decisions[-1].reason

    def test_negative_age_of_a_new_leader_grace_counts_as_live(self) -> None:
        leader = pair(score_a=100, score_b=100)
        leader.heard["A"] = 100.0  # a grace that lasts until t=100
        assert leader.sweep(50) == ("A", None)

    def test_primary_stays_when_nobody_is_live_until_it_is_released(self) -> None:
        leader = Leader()
        leader.register("A")
        leader.heartbeat("A", 100, 0)
        leader.register("B")  # never reports
        assert leader.sweep(T + 0.1) == ("A", None)  # nobody live, A not yet released
        assert leader.sweep(T + MARGIN + 0.1) == (None, None)
        assert "No live client" not in leader.decisions[-1].reason
        assert "stale" in leader.decisions[-1].reason

    def test_stale_pending_candidate_is_replaced_by_a_live_one(self) -> None:
        leader = trio(100, 90, 80)
        leader.heartbeat("B", 90, 1)
        leader.heartbeat("C", 80, 6)
        assert leader.sweep(T + MARGIN + 0.1) == (None, "B")  # B heard at 1: still live
        assert leader.sweep(1 + T + 0.1) == (None, "C")  # B silent past T
        assert leader.heartbeat("C", 80, 1 + T + 0.2) == PRIMARY


class TestRoleOverride:
    """Rule 1: an unexpired Primary override wins regardless of liveness and score (P1 holds)."""

    def test_override_with_a_free_grant_is_primary_at_once(self) -> None:
        leader = Leader()
        leader.register("A", "B")
        result = leader.override("B", 0)
        assert (result.code, result.epoch, result.expiry) == (Code.OK, 1, None)
        assert leader.roles == ("B", None)
        assert leader.group.events[-1].reason == "Role override to Primary"

    @pytest.mark.parametrize(
        "expires_at", [pytest.param(None, id="no-expiry"), pytest.param(1000.0, id="with-expiry")]
    )
    def test_override_waits_for_the_holders_grant_to_lapse(self, expires_at: float | None) -> None:
        leader = pair(score_a=100, score_b=0)
        result = leader.override("B", 2, expires_at=expires_at)
        assert result.code == Code.OK
        assert result.expiry == (None if expires_at is None else ticks(expires_at))
        assert result.epoch == 1
        assert leader.roles == ("A", "B")
        assert leader.sweep(3) == (None, "B")  # A is asked to step down
        assert leader.group.releasing == "A"
        assert leader.heartbeat("A", 100, 4) == SECONDARY
        assert leader.sweep(LAPSED - 0.02) == (None, "B")  # A's grant of t=0 may still hold
        assert leader.sweep(LAPSED) == ("B", None)  # granted without B's own heartbeat
        assert leader.group.epoch == 2
        assert leader.heartbeat("B", 0, LAPSED + 0.1) == PRIMARY

    def test_override_beats_any_score(self) -> None:
        leader = pair(score_a=100, score_b=0)
        leader.override("B", 2)
        leader.heartbeat("A", 100, 3)
        for t in (11, 12, 13):
            assert leader.heartbeat("B", 0, t) == PRIMARY
            assert leader.heartbeat("A", 100, t + 0.5) == SECONDARY
        assert leader.group.pending is None

    def test_override_keeps_a_stale_session_primary(self) -> None:
        leader = pair(score_a=100, score_b=0)
        leader.override("B", 2)
        leader.heartbeat("A", 100, 3)
        assert leader.sweep(LAPSED) == ("B", None)
        for t in (20, 50, 500):  # B never heard again; A healthy
            leader.heartbeat("A", 100, t)
            assert leader.sweep(t) == ("B", None)

    def test_override_on_a_session_that_never_reported(self) -> None:
        leader = pair()
        leader.register("C")
        leader.override("C", 2)
        assert leader.roles == ("A", "C")
        assert leader.heartbeat("A", 100, 3) == SECONDARY
        assert leader.sweep(LAPSED) == ("C", None)

    def test_override_target_is_granted_when_the_silent_holder_expires(self) -> None:
        leader = pair()
        leader.heartbeat("B", 100, 5)
        leader.override("B", 6)
        assert leader.sweep(T + MARGIN) == ("A", "B")  # A silent since 0, not yet released
        assert leader.sweep(T + MARGIN + 0.01) == ("B", None)
        reason = leader.decisions[-1].reason
        assert "Primary 'A' is stale" in reason and reason.endswith("Role override to Primary")

    def test_override_on_the_current_primary_changes_no_role(self) -> None:
        leader = pair()
        assert leader.override("A", 2).epoch == 1
        assert leader.roles == ("A", None)
        assert leader.group.sessions["A"].override == RoleOverride.Primary

    def test_override_on_the_primary_clears_a_pending_candidate(self) -> None:
        leader = pair(score_a=50, score_b=50)
        leader.heartbeat("B", 80, 2)
        leader.override("A", 3)
        assert leader.roles == ("A", None)
        assert leader.heartbeat("B", 80, 4) == SECONDARY

    def test_at_most_one_override_per_group(self) -> None:
        leader = trio(100, 50, 50)
        leader.override("B", 1, expires_at=1000)
        leader.override("C", 2)
        sessions = leader.group.sessions
        assert sessions["B"].override == RoleOverride.Off
        assert sessions["B"].override_expiry is None
        assert sessions["C"].override == RoleOverride.Primary
        assert leader.roles == ("A", "C")
        leader.heartbeat("A", 100, 3)
        assert (leader.roles, leader.group.releasing) == ((None, "C"), "A")
        assert leader.sweep(LAPSED) == ("C", None)

    def test_second_override_moves_the_role_from_the_first(self) -> None:
        leader = trio(100, 50, 50)
        leader.override("B", 1)
        leader.heartbeat("A", 100, 2)
        assert leader.sweep(LAPSED) == ("B", None)
        leader.heartbeat("B", 50, LAPSED + 1)
        leader.override("C", LAPSED + 2)
        assert leader.roles == ("B", "C")
        assert leader.heartbeat("B", 50, LAPSED + 3) == SECONDARY  # frees nothing
        assert (leader.roles, leader.group.releasing) == ((None, "C"), "B")
        assert leader.sweep(LAPSED + 1 + LAPSED - 0.02) == (None, "C")  # B's grant may hold
        assert leader.sweep(LAPSED + 1 + LAPSED) == ("C", None)

    def test_off_returns_to_automatic_calculation(self) -> None:
        leader = pair(score_a=100, score_b=0)
        leader.override("B", 2)
        leader.heartbeat("A", 100, 3)
        assert leader.sweep(LAPSED) == ("B", None)
        leader.heartbeat("B", 0, LAPSED + 0.5)
        result = leader.override_off("B", LAPSED + 1)
        assert result.code == Code.OK
        session = leader.group.sessions["B"]
        assert (session.override, session.override_expiry) == (RoleOverride.Off, None)
        assert leader.sweep(LAPSED + 1) == (None, "A")  # A outscores B, B holds the grant
        assert leader.group.releasing == "B"
        assert leader.heartbeat("B", 0, LAPSED + 2) == SECONDARY
        assert leader.heartbeat("A", 100, LAPSED + 2.1) == PENDING
        assert leader.heartbeat("A", 100, LAPSED + 0.5 + LAPSED) == PRIMARY

    def test_off_on_a_session_without_override_changes_no_role(self) -> None:
        leader = pair()
        assert leader.override_off("B", 2).code == Code.OK
        assert leader.sweep(2) == ("A", None)

    def test_off_while_the_target_is_still_pending_withdraws_it(self) -> None:
        leader = pair(score_a=100, score_b=0)
        leader.override("B", 2)
        leader.override_off("B", 3)
        assert leader.sweep(3) == ("A", None)
        assert leader.heartbeat("A", 100, 4) == PRIMARY

    @pytest.mark.parametrize(
        ("sweep_at", "roles", "override"),
        [
            pytest.param(19.9, ("B", None), RoleOverride.Primary, id="before-expiry"),
            pytest.param(20.0, (None, "A"), RoleOverride.Off, id="at-expiry-instant"),
            pytest.param(25.0, (None, "A"), RoleOverride.Off, id="after-expiry"),
        ],
    )
    def test_expiry_returns_to_automatic_calculation(
        self, sweep_at: float, roles: tuple[str | None, str | None], override: RoleOverride
    ) -> None:
        leader = pair(score_a=100, score_b=0)
        leader.override("B", 2, expires_at=20)
        leader.heartbeat("A", 100, 3)
        assert leader.heartbeat("B", 0, 19.5) == PRIMARY  # both live, before the expiry
        assert leader.heartbeat("A", 100, 19.5) == SECONDARY
        assert leader.sweep(sweep_at) == roles
        assert leader.group.sessions["B"].override == override

    def test_expiry_during_a_pending_hand_over_withdraws_the_target(self) -> None:
        leader = pair(score_a=100, score_b=50)
        leader.override("B", 2, expires_at=5)
        assert leader.roles == ("A", "B")
        leader.heartbeat("B", 50, 4.5)
        assert (leader.sweep(4.9), leader.group.releasing) == ((None, "B"), "A")
        assert leader.sweep(5) == ("A", None)  # A still held its grant: restored
        assert leader.group.sessions["B"].override == RoleOverride.Off
        assert leader.decisions[-1].clear_override
        assert leader.heartbeat("A", 100, 6) == PRIMARY
        assert leader.group.epoch == 1

    def test_expired_override_on_a_stale_primary_hands_over(self) -> None:
        leader = pair(score_a=100, score_b=0)
        leader.override("B", 2, expires_at=30)
        leader.heartbeat("A", 100, 3)
        assert leader.sweep(LAPSED) == ("B", None)  # B was last heard at 1
        for t in range(11, 30, 5):
            leader.heartbeat("A", 100, t)
        assert leader.sweep(29.9) == ("B", None)
        assert leader.sweep(30) == (None, "A")  # B never answered Primary: released at once
        assert leader.heartbeat("A", 100, 30.1) == PRIMARY

    @pytest.mark.parametrize(
        ("group_id", "session_id", "code"),
        [
            pytest.param("nope", "A", Code.GROUP_NOT_FOUND, id="unknown-group"),
            pytest.param(GROUP, "nope", Code.SESSION_NOT_FOUND, id="unknown-session"),
        ],
    )
    def test_override_on_unknown_target_changes_nothing(
        self, group_id: str, session_id: str, code: Code
    ) -> None:
        leader = pair()
        before = snapshot(leader.state)
        result = apply(
            leader.state,
            SetOverride(
                "x",
                group_id=group_id,
                session_id=session_id,
                value=RoleOverride.Primary,
                expiry=None,
            ),
        )
        assert result.code == code
        before.applied["x"] = result
        assert leader.state == before


class TestDeletion:
    """Deleting a grant holder does not stop its adapter: its grant is released like any other
    (acknowledged or certainly lapsed); evaluate decides anew."""

    def test_deleting_the_primary_of_a_pair_waits_for_its_grant(self) -> None:
        leader = pair()
        assert leader.delete("A", 2).code == Code.DELETED
        assert (leader.roles, leader.group.releasing) == ((None, None), "A")
        event = leader.group.events[-1]
        assert (event.old_primary, event.new_primary, event.reason) == (
            "A",
            None,
            "Client 'A' was deleted",
        )
        assert leader.sweep(2) == (None, "B")
        assert leader.sweep(LAPSED) == ("B", None)
        reason = leader.decisions[-1].reason
        assert "'A' was deleted and its last grant has lapsed" in reason
        assert reason.endswith("Only one client in group")

    def test_deleting_the_primary_names_the_best_live_candidate(self) -> None:
        leader = trio(100, 90, 50)
        leader.delete("A", 2)
        assert leader.sweep(2) == (None, "B")
        assert leader.heartbeat("B", 90, 2.1) == PENDING
        assert leader.heartbeat("B", 90, LAPSED) == PRIMARY

    def test_deleting_the_primary_while_a_candidate_is_pending(self) -> None:
        leader = trio(10, 90, 50)
        leader.heartbeat("B", 90, 1)
        assert (leader.roles, leader.group.releasing) == ((None, "B"), "A")
        leader.delete("A", 2)
        assert (leader.roles, leader.group.releasing) == ((None, "B"), "A")
        assert evaluate(leader.group, leader.view(2)) is None  # B already the candidate
        assert leader.heartbeat("B", 90, 2.1) == PENDING
        assert leader.heartbeat("B", 90, LAPSED) == PRIMARY

    def test_deleted_agent_that_acknowledges_frees_its_grant_at_once(self) -> None:
        leader = trio(100, 90, 50)
        leader.agent = True
        leader.delete("A", 2)
        leader.held["A"] = (SECONDARY, 1)  # it heard 404, dropped its grant and re-registered
        leader.register("A")
        leader.heartbeat("A", 0, 2.1)  # HeldRole Secondary, HeldEpoch 1: B is the candidate
        assert leader.group.releasing is None
        assert leader.heartbeat("B", 90, 2.2) == PRIMARY

    def test_deleting_the_pending_candidate_names_the_next_one(self) -> None:
        leader = trio(10, 90, 50)
        leader.heartbeat("B", 90, 1)
        assert leader.delete("B", 2).code == Code.DELETED
        assert (leader.roles, leader.group.releasing) == ((None, None), "A")
        assert leader.sweep(2) == (None, "C")

    def test_deleting_the_pending_candidate_of_a_pair_leaves_the_primary_alone(self) -> None:
        leader = pair(score_a=10, score_b=90)
        assert (leader.roles, leader.group.releasing) == ((None, "B"), "A")
        leader.delete("B", 2)
        assert leader.sweep(2) == ("A", None)  # still its grant: restored
        assert evaluate(leader.group, leader.view(2, "A")) is None
        assert leader.group.epoch == 1

    def test_deleting_a_secondary_changes_no_role(self) -> None:
        leader = trio(100, 50, 50)
        events = len(leader.group.events)
        leader.delete("C", 2)
        assert leader.sweep(2) == ("A", None)
        assert len(leader.group.events) == events

    def test_decision_computed_before_a_deletion_is_stale(self) -> None:
        leader = trio(40, 30, 30)
        leader.heard["B"], leader.scores["B"] = 1.0, 90
        decision = evaluate(leader.group, leader.view(1, "B"))
        assert decision is not None and decision.pending == "B"
        leader.delete("B", 1.5)
        before = snapshot(leader.state)
        assert apply(leader.state, decision).code == Code.STALE
        assert leader.state == before

    @pytest.mark.parametrize(
        ("group_id", "session_id", "code"),
        [
            pytest.param("nope", "A", Code.GROUP_NOT_FOUND, id="unknown-group"),
            pytest.param(GROUP, "nope", Code.SESSION_NOT_FOUND, id="unknown-session"),
        ],
    )
    def test_deleting_an_unknown_session_changes_nothing(
        self, group_id: str, session_id: str, code: Code
    ) -> None:
        leader = pair()
        version = leader.group.version
        assert (
            apply(leader.state, DeleteSession("x", group_id=group_id, session_id=session_id)).code
            == code
        )
        assert leader.group.version == version
        assert set(leader.group.sessions) == {"A", "B"}


# =========================================================================== commands


def fresh_state() -> ClusterState:
    state = ClusterState()
    assert apply(state, CreateGroup("c0", GROUP, "Name", "Desc", 600_000_000)).code == Code.CREATED
    return state


class TestCreateGroup:
    """CreateGroup: 201 new, 200 same configuration, 409 different configuration."""

    @pytest.mark.parametrize(
        ("name", "description", "timeout", "code"),
        [
            pytest.param("Name", "Desc", 600_000_000, Code.OK, id="identical"),
            pytest.param(None, None, 600_000_000, Code.OK, id="adapter-sends-only-timeout"),
            pytest.param("Name", None, 600_000_000, Code.OK, id="description-omitted"),
            pytest.param(None, "Desc", 600_000_000, Code.OK, id="name-omitted"),
            pytest.param("Name", "Desc", 300_000_000, Code.CONFLICT, id="other-timeout"),
            pytest.param(None, None, 600_000_001, Code.CONFLICT, id="timeout-off-by-one-tick"),
            pytest.param("Other", "Desc", 600_000_000, Code.CONFLICT, id="other-name"),
            pytest.param("Name", "Other", 600_000_000, Code.CONFLICT, id="other-description"),
            pytest.param("name", "Desc", 600_000_000, Code.CONFLICT, id="name-differs-in-case"),
        ],
    )
    def test_second_create_of_the_same_id(
        self, name: str | None, description: str | None, timeout: int, code: Code
    ) -> None:
        state = fresh_state()
        before = copy.deepcopy(state.groups)
        result = apply(state, CreateGroup("c1", GROUP, name, description, timeout))
        assert result.code == code
        assert state.groups == before  # never overwritten
        if code == Code.CONFLICT:
            assert GROUP in result.detail

    def test_new_group_is_created_with_its_configuration(self) -> None:
        state = ClusterState()
        result = apply(state, CreateGroup("c", "G2", "N", "D", 150_000_000, {"k": 1}))
        assert result.code == Code.CREATED
        group = state.groups["G2"]
        assert (group.name, group.description, group.timeout, group.additional_data) == (
            "N",
            "D",
            150_000_000,
            {"k": 1},
        )
        assert group.timeout_seconds == 15.0
        assert (group.primary, group.pending, group.epoch, group.sessions) == (None, None, 0, {})

    def test_group_limit_refuses_new_groups_but_not_existing_ones(self) -> None:
        state = fresh_state()  # holds GROUP
        result = apply(state, CreateGroup("c", "G2", None, None, 100_000_000, max_groups=1))
        assert result.code == Code.CONFLICT and "limit of 1 groups" in result.detail
        assert "G2" not in state.groups
        again = CreateGroup("c2", GROUP, None, None, state.groups[GROUP].timeout, max_groups=1)
        assert apply(state, again).code == Code.OK  # re-registration of a present group
        assert apply(
            state, CreateGroup("c3", "G2", None, None, 100_000_000, max_groups=2)
        ).code == (Code.CREATED)


class TestDeleteGroup:
    """DeleteGroup: refused with 409 while the group has sessions."""

    def test_empty_group_is_deleted(self) -> None:
        state = fresh_state()
        assert apply(state, DeleteGroup("d", GROUP)).code == Code.DELETED
        assert GROUP not in state.groups

    def test_group_with_sessions_is_refused(self) -> None:
        state = fresh_state()
        apply(state, RegisterSession("r", GROUP, "S", "S"))
        result = apply(state, DeleteGroup("d", GROUP))
        assert result.code == Code.CONFLICT
        assert "1 client session" in result.detail
        assert "S" in state.groups[GROUP].sessions

    def test_group_is_deletable_once_its_sessions_are_gone(self) -> None:
        state = fresh_state()
        apply(state, RegisterSession("r", GROUP, "S", "S"))
        apply(state, DeleteSession("ds", GROUP, "S"))
        assert apply(state, DeleteGroup("d", GROUP)).code == Code.DELETED

    def test_unknown_group(self) -> None:
        assert apply(ClusterState(), DeleteGroup("d", "nope")).code == Code.GROUP_NOT_FOUND

    def test_recreated_group_starts_afresh(self) -> None:
        state = fresh_state()
        apply(state, DeleteGroup("d", GROUP))
        assert apply(state, CreateGroup("c2", GROUP, None, None, 100_000_000)).code == Code.CREATED
        assert state.groups[GROUP].timeout == 100_000_000


class TestRegisterSession:
    """RegisterSession: 201 new, 200 again (adapter restarts), 409 under another name."""

    @pytest.mark.parametrize(
        ("name", "code"),
        [
            pytest.param("S", Code.OK, id="same-name"),
            pytest.param(None, Code.OK, id="name-omitted"),
            pytest.param("Other", Code.CONFLICT, id="other-name"),
        ],
    )
    def test_registering_again(self, name: str | None, code: Code) -> None:
        state = fresh_state()
        apply(state, RegisterSession("r1", GROUP, "S", "S", {"a": 1}))
        before = copy.deepcopy(state.groups)
        assert apply(state, RegisterSession("r2", GROUP, "S", name, {"b": 2})).code == code
        assert state.groups == before  # version, order and data unchanged

    def test_new_sessions_get_increasing_order_and_bump_the_version(self) -> None:
        state = fresh_state()
        group = state.groups[GROUP]
        assert (
            apply(state, RegisterSession("r1", GROUP, "S1", "one", {"x": 1})).code == Code.CREATED
        )
        assert apply(state, RegisterSession("r2", GROUP, "S2", None)).code == Code.CREATED
        s1, s2 = group.sessions["S1"], group.sessions["S2"]
        assert s1.order < s2.order
        assert (s1.name, s1.additional_data, s1.heartbeat, s1.override) == (
            "one",
            {"x": 1},
            None,
            RoleOverride.Off,
        )
        assert group.version == 2
        assert role_of(group, "S1") == SECONDARY

    def test_unknown_group(self) -> None:
        assert (
            apply(ClusterState(), RegisterSession("r", "nope", "S", "S")).code
            == Code.GROUP_NOT_FOUND
        )

    def test_session_limit_refuses_new_sessions_but_not_present_ones(self) -> None:
        state = fresh_state()
        assert apply(state, RegisterSession("r1", GROUP, "S1", None, max_sessions=1)).code == (
            Code.CREATED
        )
        result = apply(state, RegisterSession("r2", GROUP, "S2", None, max_sessions=1))
        assert result.code == Code.CONFLICT and "limit of 1 client sessions" in result.detail
        assert list(state.groups[GROUP].sessions) == ["S1"]
        assert apply(state, RegisterSession("r3", GROUP, "S1", None, max_sessions=1)).code == (
            Code.OK
        )


class TestRequestIdDedup:
    """A command whose request id was applied before returns the same Result and changes nothing."""

    @pytest.mark.parametrize(
        "command",
        [
            pytest.param(CreateGroup("same", "G2", None, None, 1), id="create-group"),
            pytest.param(CreateGroup("same", GROUP, None, None, 1), id="create-group-conflict"),
            pytest.param(DeleteGroup("same", "nope"), id="delete-unknown-group"),
            pytest.param(RegisterSession("same", GROUP, "NEW", "NEW"), id="register-session"),
            pytest.param(DeleteSession("same", GROUP, "A"), id="delete-primary"),
            pytest.param(
                SetOverride("same", GROUP, "B", RoleOverride.Primary, None), id="set-override"
            ),
            pytest.param(RegisterMember("same", "n9", "h:1", "http://h"), id="register-member"),
        ],
    )
    def test_second_apply_returns_the_first_result_and_changes_nothing(
        self, command: Command
    ) -> None:
        leader = pair()
        first = apply(leader.state, command)
        before = snapshot(leader.state)
        assert apply(leader.state, command) is first
        assert leader.state == before

    def test_retried_delete_still_answers_deleted(self) -> None:
        leader = pair()
        command = DeleteSession("del-1", GROUP, "B")
        assert apply(leader.state, command).code == Code.DELETED
        assert apply(leader.state, command).code == Code.DELETED
        assert (
            apply(leader.state, DeleteSession("del-2", GROUP, "B")).code == Code.SESSION_NOT_FOUND
        )

    def test_request_id_reused_for_another_command_returns_the_earlier_result(self) -> None:
        leader = pair()
        first = apply(leader.state, RegisterSession("dup", GROUP, "C", "C"))
        assert apply(leader.state, DeleteSession("dup", GROUP, "A")) is first
        assert leader.group.primary == "A"

    def test_oldest_request_ids_are_forgotten_beyond_the_limit(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(dispatch, "MAX_REMEMBERED_REQUESTS", 3)
        state = ClusterState()
        for i in range(4):
            apply(state, RegisterMember(f"m{i}", f"n{i}", "r", "a"))
        assert list(state.applied) == ["m1", "m2", "m3"]
        del state.members["n0"]
        apply(state, RegisterMember("m0", "n0", "r", "a"))  # m0 forgotten: applied again
        assert "n0" in state.members

    @pytest.mark.parametrize(
        "command",
        [
            pytest.param(SaveCheckpoint("ckpt", (), ()), id="checkpoint"),
            pytest.param(Decide("decide:g:0", GROUP, 0, None, None, False, "r", 0), id="decide"),
        ],
    )
    def test_checkpoints_and_decisions_are_not_remembered(self, command: Command) -> None:
        state = fresh_state()
        apply(state, command)
        assert command.request_id not in state.applied


class TestDecide:
    """Decide is compare-and-set on the group version."""

    def test_stale_version_is_refused_and_changes_nothing(self) -> None:
        leader = Leader()
        leader.register("A", "B")
        leader.heard["A"], leader.scores["A"] = 0.0, 100
        decision = evaluate(leader.group, leader.view(0, "A"))
        assert decision is not None
        leader.register("C")  # the group changed meanwhile
        before = snapshot(leader.state)
        assert apply(leader.state, decision).code == Code.STALE
        assert leader.state == before

    def test_same_decision_applied_twice_is_stale_the_second_time(self) -> None:
        leader = Leader()
        leader.register("A", "B")
        leader.heard["A"], leader.scores["A"] = 0.0, 100
        decision = evaluate(leader.group, leader.view(0, "A"))
        assert decision is not None
        assert apply(leader.state, decision).code == Code.OK
        before = snapshot(leader.state)
        assert apply(leader.state, decision).code == Code.STALE
        assert leader.state == before

    @pytest.mark.parametrize(
        ("primary", "pending"),
        [
            pytest.param("ghost", None, id="unknown-primary"),
            pytest.param(None, "ghost", id="unknown-pending"),
        ],
    )
    def test_naming_an_unknown_session_is_stale(
        self, primary: str | None, pending: str | None
    ) -> None:
        state = fresh_state()
        before = snapshot(state)
        decision = Decide("d", GROUP, 0, primary, pending, False, "r", 0)
        assert apply(state, decision).code == Code.STALE
        assert state == before

    def test_unknown_group(self) -> None:
        assert (
            apply(ClusterState(), Decide("d", "nope", 0, None, None, False, "r", 0)).code
            == Code.GROUP_NOT_FOUND
        )

    def test_evaluate_is_pure_and_describes_its_decision(self) -> None:
        leader = pair()
        leader.heartbeat("B", 70, 6)
        before = snapshot(leader.state)
        decision = evaluate(leader.group, leader.view(T + 0.1))  # A not live, not yet released
        assert leader.state == before
        assert decision == Decide(
            request_id=f"decide:{GROUP}:{leader.group.version}",
            group_id=GROUP,
            version=leader.group.version,
            primary="A",
            pending="B",
            clear_override=False,
            reason="Highest FailoverScore (70) among live clients",
            time=ticks(T + 0.1),
            scores=(("A", 100), ("B", 70)),
        )

    def test_settled_group_evaluates_to_none(self) -> None:
        leader = pair()
        assert evaluate(leader.group, leader.view(2)) is None
        assert evaluate(leader.group, leader.view(2, "A")) is None
        assert evaluate(leader.group, leader.view(2, "B")) is None


class TestEvents:
    """Role changes are kept as a bounded decision history."""

    def test_grant_event_carries_scores_and_reason(self) -> None:
        leader = pair(score_a=50, score_b=50)
        leader.heartbeat("B", 80, 2)
        leader.heartbeat("A", 50, 3)
        leader.heartbeat("B", 80, LAPSED)
        event = leader.group.events[-1]
        assert (event.time, event.epoch, event.old_primary, event.new_primary, event.pending) == (
            ticks(LAPSED),
            2,
            None,
            "B",
            None,
        )
        assert event.scores == {"A": 50, "B": 80}

    def test_history_is_bounded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(failover, "MAX_EVENTS_PER_GROUP", 3)
        leader = Leader()
        leader.register("A")
        for i in range(5):
            leader.heartbeat("A", 100, i * 100)  # promoted after every release
            leader.sweep(i * 100 + T + MARGIN + 1)
        assert len(leader.group.events) == 3
        assert leader.group.events[-1].new_primary is None
        assert leader.group.events[-2].epoch == 5


class TestSaveCheckpoint:
    """SaveCheckpoint stores heartbeat records and keeps the group's data time monotonic."""

    def test_records_are_stored_and_unknown_targets_ignored(self) -> None:
        leader = pair()
        version = leader.group.version
        record = HeartbeatRecord(
            score=42.5, last_data_processed=ticks(1), heartbeat_time=ticks(1), received_at=ticks(2)
        )
        command = SaveCheckpoint(
            "ckpt",
            heartbeats=((GROUP, "B", record), (GROUP, "ghost", record), ("nope", "B", record)),
            group_times=(("nope", ticks(5)),),
        )
        assert apply(leader.state, command).code == Code.OK
        assert leader.group.sessions["B"].heartbeat == record
        assert leader.group.sessions["A"].heartbeat is None
        assert "nope" not in leader.state.groups
        assert leader.group.version == version  # scores are not role changes

    @pytest.mark.parametrize(
        ("times", "expected"),
        [
            pytest.param([100], 100, id="first"),
            pytest.param([100, 200], 200, id="advances"),
            pytest.param([200, 100], 200, id="never-goes-back"),
            pytest.param([200, 200], 200, id="same"),
            pytest.param([0], 0, id="unknown-stays-unknown"),
            pytest.param([300, 0], 300, id="zero-does-not-reset"),
        ],
    )
    def test_group_data_time_is_monotonic(self, times: list[int], expected: int) -> None:
        state = fresh_state()
        for i, ticks_ in enumerate(times):
            apply(state, SaveCheckpoint(f"ckpt-{i}", heartbeats=(), group_times=((GROUP, ticks_),)))
        assert state.groups[GROUP].last_data_processed == expected


class TestRegisterMember:
    """RegisterMember records (and updates) a cluster member."""

    def test_member_is_stored_and_updated(self) -> None:
        state = ClusterState()
        assert apply(state, RegisterMember("m1", "n1", "h1:5690", "http://h1:5590")).code == Code.OK
        apply(state, RegisterMember("m2", "n1", "h2:5690", "http://h2:5590"))
        member = state.members["n1"]
        assert (member.raft, member.api_url) == ("h2:5690", "http://h2:5590")


@dataclass(frozen=True)
class Unknown(Command):
    payload: object = None


class TestApplyIsTotal:
    """apply never raises: garbage becomes an INVALID result, and the state stays as it was."""

    @pytest.mark.parametrize(
        "command",
        [
            pytest.param(None, id="none"),
            pytest.param(object(), id="plain-object"),
            pytest.param("CreateGroup", id="string"),
            pytest.param(42, id="int"),
            pytest.param(Unknown("u"), id="unknown-command-type"),
            pytest.param(Command("base"), id="base-command"),
            pytest.param(CreateGroup(["list"], GROUP, None, None, 1), id="unhashable-request-id"),
            pytest.param(CreateGroup("x", ["g"], None, None, 1), id="unhashable-group-id"),
            pytest.param(RegisterSession("x", GROUP, {"s": 1}, None), id="unhashable-session-id"),
            pytest.param(DeleteSession("x", GROUP, ["A"]), id="unhashable-delete-id"),
            pytest.param(SaveCheckpoint("x", None, None), id="checkpoint-of-none"),
            pytest.param(SaveCheckpoint("x", ((GROUP,),), ()), id="checkpoint-short-tuple"),
            pytest.param(SaveCheckpoint("x", (), ((GROUP, "soon"),)), id="checkpoint-time-not-int"),
        ],
    )
    def test_garbage_is_invalid_and_changes_nothing(self, command: object) -> None:
        state = fresh_state()
        apply(state, RegisterSession("r", GROUP, "A", "A"))
        before = snapshot(state)
        result = apply(state, command)
        assert isinstance(result, Result)
        assert result.code == Code.INVALID
        assert state.groups == before.groups
        assert state.members == before.members


class TestUpgrade:
    """Snapshots and journal entries written by an older release load with today's defaults."""

    def test_state_missing_a_newer_field_gets_its_default(self) -> None:
        leader = pair()
        old = copy.deepcopy(leader.state)
        del old.__dict__["users"]  # as pickled by a release before users existed
        del old.groups[GROUP].sessions["A"].__dict__["override_expiry"]
        restored = pickle.loads(pickle.dumps(old))
        assert restored.users == {}
        assert restored.groups[GROUP].sessions["A"].override_expiry is None
        assert restored.groups[GROUP].primary == leader.group.primary

    def test_command_missing_a_newer_field_gets_its_default(self) -> None:
        command = RegisterSession(request_id="r", group_id=GROUP, session_id="s", name="s")
        state = dict(command.__dict__)
        del state["additional_data"]
        restored = RegisterSession.__new__(RegisterSession)
        restored.__setstate__(state)
        assert restored == command
