"""The history checker itself (tests/support/history.py), on synthetic histories.

Each property gets a history that violates it and a near miss that does not, so a checker that
misses a violation, or flags a correct history, fails here. Times are the adapter's monotonic
clock in seconds; T = 2 s, so ValidFor = 1.998 s.
"""

from __future__ import annotations

import httpx
import pytest
from support.history import (
    GAVE_UP,
    PENDING,
    PRIMARY,
    SECONDARY,
    History,
    Record,
    failed_seconds,
    grants,
    missing_creates,
    p1_violations,
    promotion_delay,
    role_changes,
)

VALID = 1.998


def answer(
    session: str, sent: float, role: int, *, epoch: int = 1, rtt: float = 0.01, late: bool = False
) -> Record:
    valid = VALID if role == PRIMARY else 0.0
    return Record(
        "g", session, "u", sent, sent + rtt, 200, role, epoch, valid, late=late, could_carry=VALID
    )


def lost(session: str, sent: float, request: int = 0) -> Record:
    """A request whose answer may still come: it timed out, or the adapter gave up on it."""
    error = GAVE_UP if request else "ReadTimeout"
    return Record(
        "g", session, "u", sent, sent + 0.5, None, error=error, request=request,
        could_carry=VALID, indeterminate=not request,
    )  # fmt: skip


class TestP1:
    def test_grants_one_after_the_other_are_safe(self) -> None:
        assert p1_violations([answer("a", 0.0, PRIMARY), answer("b", 2.5, PRIMARY, epoch=2)]) == []

    def test_overlapping_answered_grants_are_a_violation(self) -> None:
        found = p1_violations([answer("a", 0.0, PRIMARY), answer("b", 1.0, PRIMARY, epoch=2)])
        assert len(found) == 1 and "a valid" in str(found[0])

    def test_a_received_secondary_answer_ends_the_grant(self) -> None:
        history = [
            answer("a", 0.0, PRIMARY),
            answer("a", 0.5, SECONDARY),
            answer("b", 1.0, PRIMARY, epoch=2),
        ]
        assert p1_violations(history) == []

    def test_a_lost_secondary_answer_ends_nothing(self) -> None:
        """The issue's case: A was told Secondary but never heard it; B granted meanwhile."""
        history = [answer("a", 0.0, PRIMARY), lost("a", 0.5), answer("b", 1.0, PRIMARY, epoch=2)]
        found = p1_violations(history)
        assert (found[0].first.start, found[0].first.end) == (0.01, VALID)

    def test_a_holders_unanswered_request_may_have_renewed_its_grant(self) -> None:
        """A's request at 1.5 got no answer: it may have renewed the grant until 3.498."""
        history = [answer("a", 0.0, PRIMARY), lost("a", 1.5), answer("b", 2.5, PRIMARY, epoch=2)]
        (violation,) = p1_violations(history)
        assert violation.first.start == 1.5 and violation.first.end == pytest.approx(1.5 + VALID)

    def test_no_answer_until_after_the_validity_grants_nothing(self) -> None:
        """Watched unanswered for 15 s (e.g. the adapter's packets were dropped): any answer
        would have come after send + ValidFor, too late to act on."""
        waited = Record("g", "a", "u", 1.5, 16.5, None, error="ReadTimeout", could_carry=VALID,
                        indeterminate=True)  # fmt: skip
        history = [answer("a", 0.0, PRIMARY), waited, answer("b", 2.5, PRIMARY, epoch=2)]
        assert p1_violations(history) == []

    def test_an_answer_lost_with_its_connection_grants_nothing(self) -> None:
        """Reset mid-reply (the relaying node died): no client can have received it."""
        reset = Record(
            "g", "a", "u", 1.5, 1.6, None, error="RemoteProtocolError", could_carry=VALID
        )
        history = [answer("a", 0.0, PRIMARY), reset, answer("b", 2.5, PRIMARY, epoch=2)]
        assert p1_violations(history) == []

    def test_an_attempt_given_up_on_counts_until_its_late_outcome_is_known(self) -> None:
        gave_up = lost("a", 1.5, request=4)
        history = [answer("a", 0.0, PRIMARY), gave_up, answer("b", 2.5, PRIMARY, epoch=2)]
        assert len(p1_violations(history)) == 1  # the run ended before it did
        reset = Record("g", "a", "u", 1.5, 3.0, None, error="RemoteProtocolError", request=4,
                       late=True)  # fmt: skip
        assert p1_violations([*history, reset]) == []

    def test_an_unanswered_request_of_a_non_holder_is_not_a_grant(self) -> None:
        history = [
            answer("b", 0.0, SECONDARY),
            lost("b", 0.5),
            answer("a", 0.6, PRIMARY, epoch=2),
        ]
        assert p1_violations(history) == []

    def test_a_late_primary_answer_counts_from_its_arrival(self) -> None:
        """The adapter gave up at 1.5 s; the answer (Primary, valid until 2.998) came at 2.2
        s. A client with a longer timeout acts on it: B's grant at 2.5 overlaps."""
        history = [
            answer("a", 0.0, PRIMARY),
            lost("a", 1.0, request=7),
            Record("g", "a", "u", 1.0, 2.2, 200, PRIMARY, 1, VALID, request=7, late=True),
            answer("b", 2.5, PRIMARY, epoch=2),
        ]
        (violation,) = p1_violations(history)
        assert violation.first.start == 2.2
        # The same history without the late answer would pass: "gave up" is then a possible
        # renewal only from its send time, which the late answer replaces.
        late_grants = [g for g in grants(history)["g"] if g.session == "a" and g.start == 2.2]
        assert late_grants

    def test_a_late_secondary_answer_ends_nothing(self) -> None:
        history = [
            answer("a", 0.0, PRIMARY),
            lost("a", 0.5, request=3),
            Record("g", "a", "u", 0.5, 0.8, 200, SECONDARY, 1, 0.0, request=3, late=True),
            answer("b", 1.0, PRIMARY, epoch=2),
        ]
        assert len(p1_violations(history)) == 1

    def test_validity_runs_from_the_send_time_on_the_adapters_clock(self) -> None:
        slow = Record("g", "a", "u", 0.0, 1.9, 200, PRIMARY, 1, VALID)  # valid until 1.998
        assert len(p1_violations([slow, answer("b", 1.95, PRIMARY, epoch=2)])) == 1
        assert p1_violations([slow, answer("b", 2.0, PRIMARY, epoch=2)]) == []

    def test_pending_is_not_a_grant(self) -> None:
        history = [answer("a", 0.0, PRIMARY), answer("b", 0.5, PENDING)]
        assert p1_violations(history) == []


class TestP2:
    def test_a_role_or_epoch_change_after_the_fault_is_reported(self) -> None:
        history = [answer("a", 0.0, PRIMARY), answer("a", 0.5, SECONDARY)]
        assert role_changes(history, since=0.4) == [
            "g/a at +0.11 s via u: (role, epoch) (1, 1) -> (0, 1)"
        ]
        renewed = [answer("a", 0.0, PRIMARY), answer("a", 0.5, PRIMARY, epoch=2)]
        assert len(role_changes(renewed, since=0.4)) == 1

    def test_no_change_is_clean(self) -> None:
        history = [answer("a", t, PRIMARY) for t in (0.0, 1.0, 2.0)]
        assert role_changes(history, since=0.5) == []

    def test_late_answers_are_not_changes_the_adapter_saw(self) -> None:
        history = [answer("a", 0.0, PRIMARY), answer("a", 0.5, SECONDARY, late=True)]
        assert role_changes(history, since=0.4) == []

    def test_failed_span_runs_from_the_first_failure_to_the_next_success(self) -> None:
        failing = [
            answer("a", 0.0, PRIMARY, rtt=0.1),
            lost("a", 1.0),
            Record("g", "a", "u", 1.2, 1.3, 503),
            answer("a", 1.4, PRIMARY, rtt=0.1),
        ]
        assert failed_seconds(failing, since=0.5) == pytest.approx(0.5)


class TestP3:
    def test_promotion_delay_from_the_last_heartbeat_of_the_stopped_primary(self) -> None:
        history = [
            answer("a", 0.0, PRIMARY),
            answer("a", 1.0, PRIMARY),
            answer("b", 1.5, SECONDARY),
            answer("b", 3.5, PRIMARY, epoch=2),
        ]
        assert promotion_delay(history, "g", "a", stop_time=1.2) == pytest.approx(2.51)

    def test_no_promotion_is_none(self) -> None:
        history = [answer("a", 0.0, PRIMARY), answer("b", 1.5, SECONDARY)]
        assert promotion_delay(history, "g", "a", stop_time=0.5) is None


class TestP4:
    def test_an_acknowledged_create_missing_on_a_node_is_reported(self) -> None:
        history = History(creates=[("g1", None), ("g1", "s1")])

        def node(request: httpx.Request) -> httpx.Response:
            found = request.url.host == "n1" or request.url.path.endswith("/groups/g1")
            return httpx.Response(200 if found else 404)

        missing = missing_creates(
            history, ["http://n1", "http://n2"], timeout=0.0, transport=httpx.MockTransport(node)
        )
        assert missing == ["http://n2/api/v1/clientfailover/groups/g1/clientsessions/s1"]
