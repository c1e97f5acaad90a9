"""``evaluate``: the role decision a group needs, from what the leader has heard of it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cfs_cluster.engine.failover import Decide, Group, Session
from cfs_cluster.protocol.wire import RoleOverride


@dataclass(frozen=True)
class LivenessView:
    """What the leader knows of one group's sessions at one instant.

    ``ages`` maps a session id to the seconds since the leader last heard it (negative while a
    new leader's grace lasts); a session missing from it has not been heard. ``scores`` holds
    the latest FailoverScore per session. ``margin`` is the extra time after FailoverTimeout
    before a silent grant holder is certainly expired (design.md P1).
    """

    ages: Mapping[str, float]
    scores: Mapping[str, float]
    now: int  # UTC ticks, for override expiry
    margin: float
    heartbeat_from: str | None = None
    # True when ``heartbeat_from`` was already the pending candidate when its heartbeat arrived:
    # only such a heartbeat confirms the grant (rule 6). The heartbeat that makes a session the
    # candidate answers it PendingPrimary, so that the adapter's confirmation chain does the rest.
    sender_was_pending: bool = False


def evaluate(group: Group, view: LivenessView) -> Decide | None:
    """Return the decision the group needs now, or None when its roles are right."""
    timeout = group.timeout_seconds
    expired_override = any(
        s.override == RoleOverride.Primary
        and s.override_expiry is not None
        and s.override_expiry <= view.now
        for s in group.sessions.values()
    )
    desired, why, direct = _desired(group, view, timeout)
    primary, pending = group.primary, group.pending
    target: tuple[str | None, str | None]
    if desired == primary:
        target = (primary, None)
    elif primary is not None and not _released(primary, group, view, timeout):
        target = (primary, desired)
    elif desired is None:
        target = (None, None)
        why = _release_reason(primary, view, timeout) if primary else why
    elif direct or (view.heartbeat_from == desired and view.sender_was_pending):
        target = (desired, None)
    else:
        target = (None, desired)
    if target == (primary, pending) and not expired_override:
        return None
    if primary is not None and target[0] != primary and target[0] is None and desired is not None:
        why = f"{_release_reason(primary, view, timeout)}; candidate '{desired}': {why}"
    return Decide(
        request_id=f"decide:{group.id}:{group.version}",
        group_id=group.id,
        version=group.version,
        primary=target[0],
        pending=target[1],
        clear_override=expired_override,
        reason=why,
        time=view.now,
        scores=tuple(sorted(view.scores.items())),
    )


def _desired(group: Group, view: LivenessView, timeout: float) -> tuple[str | None, str, bool]:
    """Who should hold Primary, why, and whether the grant may go to them without a pending step."""
    for session in group.sessions.values():
        if session.override == RoleOverride.Primary and (
            session.override_expiry is None or session.override_expiry > view.now
        ):
            return session.id, "Role override to Primary", True
    live = [s for s in group.sessions.values() if _is_live(s.id, view, timeout)]
    if not live:
        return None, "No live client in group", False
    if len(group.sessions) == 1:
        return live[0].id, "Only one client in group", True

    def rank(s: Session) -> tuple[float, bool, bool, int]:
        return (_score(s, view), s.id == group.primary, s.id == group.pending, -s.order)

    best = max(live, key=rank)
    incumbent = group.sessions.get(group.primary) if group.primary else None
    if (
        incumbent is not None
        and incumbent in live
        and _score(incumbent, view) >= _score(best, view)
    ):
        return incumbent.id, "Incumbent keeps the role", False
    if incumbent is None or incumbent not in live:
        return best.id, f"Highest FailoverScore ({_score(best, view):g}) among live clients", False
    return (
        best.id,
        f"FailoverScore {_score(best, view):g} is higher than the primary's "
        f"{_score(incumbent, view):g}",
        False,
    )


def _is_live(session_id: str, view: LivenessView, timeout: float) -> bool:
    age = view.ages.get(session_id)
    return age is not None and age <= timeout


def _released(primary: str, group: Group, view: LivenessView, timeout: float) -> bool:
    """True when the holder's grant is free: answered now, certainly expired, or deleted."""
    if primary not in group.sessions or view.heartbeat_from == primary:
        return True
    age = view.ages.get(primary)
    return age is None or age > timeout + view.margin


def _release_reason(primary: str, view: LivenessView, timeout: float) -> str:
    if view.heartbeat_from == primary:
        return f"Client '{primary}' yields the role"
    age = view.ages.get(primary)
    heard = "never heard by this leader" if age is None else f"no heartbeat for {age:.1f} s"
    return f"Primary '{primary}' is stale ({heard}; FailoverTimeout {timeout:g} s)"


def _score(session: Session, view: LivenessView) -> float:
    score = view.scores.get(session.id)
    if score is None and session.heartbeat is not None:
        return session.heartbeat.score
    return score if score is not None else 0.0
