"""``evaluate``: the role decision a group needs, from what the leader has heard of it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cfs_cluster.engine.failover import Decide, Group, Session
from cfs_cluster.protocol.wire import RoleOverride


@dataclass(frozen=True)
class LivenessView:
    """What the leader knows of one group's sessions at one instant.

    ``ages`` maps a session id to the seconds since the leader last heard it (negative while a
    new leader's grace lasts); a session missing from it has not been heard. ``scores`` holds
    the latest FailoverScore per session. ``granted`` maps a session to the seconds since the
    last Primary answer it may have been given was composed (negative for the answers an
    earlier leader may have given, until a new leader's grace ends); a session missing from it
    holds nothing. That grant certainly lapsed ``FailoverTimeout + margin`` after it (ValidFor
    is 0.999 T on the adapter's clock from before; the margin covers scheduling and clock-rate
    drift, design.md P1). ``acks`` maps a session
    to the epoch up to which its latest heartbeat says it acts on no grant (our agent's
    ``HeldRole``/``HeldEpoch``); AVEVA adapters never send it. ``term`` is the Raft term the
    leader decides in; every decision carries it.
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
    granted: Mapping[str, float] = field(default_factory=dict)
    acks: Mapping[str, int] = field(default_factory=dict)
    term: int = 0


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
    primary, pending, releasing = group.primary, group.pending, group.releasing
    notes: list[str] = []
    regrant = False
    if (
        releasing is not None
        and releasing == desired
        and primary is None
        and not _acknowledged(releasing, group, view)
    ):
        # The role comes back to the session still holding it: the same grant, restored.
        primary, releasing = releasing, None
        why = f"Client '{primary}' keeps the role: {why}"
    elif releasing is not None and _free(releasing, group, view):
        notes.append(_release_reason(releasing, group, view))
        releasing = None
    if primary is not None and desired != primary:
        if _free(primary, group, view):
            notes.append(_release_reason(primary, group, view))
            primary = None
        elif releasing is None and _is_live(primary, view, timeout):
            # P1: a live holder is told Secondary from now on, but keeps counting as a holder
            # until it acknowledges or its last grant certainly lapsed.
            notes.append(f"Client '{primary}' is asked to step down")
            primary, releasing = None, primary
    elif (
        primary is not None
        and view.heartbeat_from == primary
        and _acknowledged(primary, group, view)
    ):
        regrant = True  # it dropped its grant on its own clock, and should hold the role
        why = f"Client '{primary}' dropped its grant (epoch {group.epoch}); granted anew"
    if desired is None or desired == primary:
        pending = None
    elif (
        primary is None
        and releasing is None
        and (direct or (view.heartbeat_from == desired and view.sender_was_pending))
    ):
        primary, pending = desired, None
    else:
        pending = desired
    target = (primary, pending, releasing)
    if target == (group.primary, group.pending, group.releasing) and not (
        expired_override or regrant
    ):
        return None
    if notes:
        why = "; ".join([*notes, f"candidate '{desired}': {why}"] if desired else notes)
    return Decide(
        request_id=f"decide:{group.id}:{group.version}",
        group_id=group.id,
        version=group.version,
        primary=primary,
        pending=pending,
        clear_override=expired_override,
        reason=why,
        time=view.now,
        scores=tuple(sorted(view.scores.items())),
        term=view.term,
        releasing=releasing,
        regrant=regrant,
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

    # The session releasing the role still holds its grant: it counts as the incumbent, so a
    # tie hands the role back to it rather than on (no spurious change, P2).
    holder = group.primary or group.releasing

    def rank(s: Session) -> tuple[float, bool, bool, int]:
        return (_score(s, view), s.id == holder, s.id == group.pending, -s.order)

    best = max(live, key=rank)
    incumbent = group.sessions.get(holder) if holder else None
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


def _acknowledged(session_id: str, group: Group, view: LivenessView) -> bool:
    """The session said it acts on no grant up to the group's current epoch."""
    return view.acks.get(session_id, -1) >= group.epoch


def _free(session_id: str, group: Group, view: LivenessView) -> bool:
    """True when the session certainly no longer acts on a grant: it acknowledged, or the last
    Primary answer it may have received has certainly lapsed. Being *sent* a Secondary answer
    frees nothing (that answer may be lost), nor does deleting the session."""
    if _acknowledged(session_id, group, view):
        return True
    age = view.granted.get(session_id)
    return age is None or age > group.timeout_seconds + view.margin


def _release_reason(session_id: str, group: Group, view: LivenessView) -> str:
    if _acknowledged(session_id, group, view):
        return f"Client '{session_id}' acknowledged it no longer acts as Primary"
    if session_id not in group.sessions:
        return f"Client '{session_id}' was deleted and its last grant has lapsed"
    age = view.ages.get(session_id)
    heard = "never heard by this leader" if age is None else f"no heartbeat for {age:.1f} s"
    if age is not None and age <= group.timeout_seconds:
        return f"The last grant of '{session_id}' has lapsed"
    return f"Primary '{session_id}' is stale ({heard}; FailoverTimeout {group.timeout_seconds:g} s)"


def _score(session: Session, view: LivenessView) -> float:
    score = view.scores.get(session.id)
    if score is None and session.heartbeat is not None:
        return session.heartbeat.score
    return score if score is not None else 0.0
