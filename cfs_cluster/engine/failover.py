"""Failover groups and sessions: their records, the commands that change them, the handlers.

The role rules these handlers keep are listed in the package docstring (``cfs_cluster.engine``);
``decisions.evaluate`` computes the ``Decide`` commands.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cfs_cluster.engine.commands import Code, Command, Handler, Result
from cfs_cluster.engine.upgradable import Upgradable
from cfs_cluster.protocol.wire import TICKS_PER_SECOND, ClientRole, RoleOverride

if TYPE_CHECKING:
    from cfs_cluster.engine.state import ClusterState

MAX_EVENTS_PER_GROUP = 100


@dataclass
class HeartbeatRecord(Upgradable):
    """The last heartbeat of a session, as checkpointed by the leader."""

    score: float
    last_data_processed: int  # UTC ticks, 0 = unknown
    heartbeat_time: int  # UTC ticks the client stamped (or the server's receive time)
    received_at: int  # UTC ticks the leader received it


@dataclass
class Session(Upgradable):
    id: str
    name: str | None
    additional_data: Any
    order: int
    heartbeat: HeartbeatRecord | None = None
    override: RoleOverride = RoleOverride.Off
    override_expiry: int | None = None  # UTC ticks; None = never


@dataclass
class RoleEvent(Upgradable):
    """One role change of a group, kept for the decision history."""

    time: int  # UTC ticks
    epoch: int
    old_primary: str | None
    new_primary: str | None
    pending: str | None
    reason: str
    scores: dict[str, float]
    # 1, 2, 3 … within the group, kept across the trimming to the last 100: the cursor of
    # ``GET …/events?after=`` (0 on events recorded before the field existed).
    sequence: int = 0


@dataclass
class Group(Upgradable):
    id: str
    name: str | None
    description: str | None
    timeout: int  # ticks
    additional_data: Any
    sessions: dict[str, Session] = field(default_factory=dict)
    primary: str | None = None
    pending: str | None = None
    # A session told to step down that may still act on its last grant (it is answered
    # Secondary): nobody else is granted until it acknowledges or its grant certainly lapsed.
    # It may name a deleted session, whose adapter may still be acting on its grant.
    releasing: str | None = None
    epoch: int = 0
    version: int = 0
    last_data_processed: int = 0  # UTC ticks, 0 = unknown
    events: list[RoleEvent] = field(default_factory=list)

    @property
    def timeout_seconds(self) -> float:
        return self.timeout / TICKS_PER_SECOND


def role_of(group: Group, session_id: str) -> ClientRole:
    if group.primary == session_id:
        return ClientRole.Primary
    if group.pending == session_id:
        return ClientRole.PendingPrimary
    return ClientRole.Secondary


@dataclass(frozen=True)
class CreateGroup(Command):
    group_id: str
    name: str | None
    description: str | None
    timeout: int
    additional_data: Any = None
    max_groups: int = 0  # refuse a new group when this many exist; 0 = unlimited


@dataclass(frozen=True)
class DeleteGroup(Command):
    group_id: str


@dataclass(frozen=True)
class RegisterSession(Command):
    group_id: str
    session_id: str
    name: str | None
    additional_data: Any = None
    max_sessions: int = 0  # refuse a new session when the group has this many; 0 = unlimited


@dataclass(frozen=True)
class DeleteSession(Command):
    group_id: str
    session_id: str
    time: int = 0


@dataclass(frozen=True)
class SetOverride(Command):
    group_id: str
    session_id: str
    value: RoleOverride
    expiry: int | None  # UTC ticks, computed by the receiving node
    time: int = 0


@dataclass(frozen=True)
class Decide(Command):
    """A role decision of the leader, applied only if the group is still at ``version`` and
    the Raft term it was decided in is still the current one (``ClusterState.opened_term``):
    a deposed leader's decision, computed from liveness it no longer owns, never applies in a
    later term."""

    group_id: str
    version: int
    primary: str | None
    pending: str | None
    clear_override: bool
    reason: str
    time: int
    scores: tuple[tuple[str, float], ...] = ()
    term: int = 0
    releasing: str | None = None
    # Grant ``primary`` anew (a new epoch) although it already is the primary: it told us it
    # dropped its grant (its validity lapsed on its own clock) and no longer acts on the old one.
    regrant: bool = False


@dataclass(frozen=True)
class SaveCheckpoint(Command):
    """Scores and data times the leader heard, so a new leader starts from recent values."""

    heartbeats: tuple[tuple[str, str, HeartbeatRecord], ...]
    group_times: tuple[tuple[str, int], ...]
    term: int = 0  # fenced like Decide: the values are the leader's own liveness


def _fenced(state: ClusterState, term: int) -> Result | None:
    """STALE when a command computed from leader-local liveness comes from another term."""
    if term != state.opened_term:
        return Result(Code.STALE, f"decided in term {term}; term {state.opened_term} is current")
    return None


def _create_group(state: ClusterState, cmd: CreateGroup) -> Result:
    existing = state.groups.get(cmd.group_id)
    if existing is None:
        if 0 < cmd.max_groups <= len(state.groups):
            return Result(
                Code.CONFLICT,
                f"The cluster already holds its limit of {cmd.max_groups} groups "
                "(--max-groups); delete unused groups or raise the limit.",
            )
        state.groups[cmd.group_id] = Group(
            cmd.group_id, cmd.name, cmd.description, cmd.timeout, cmd.additional_data
        )
        return Result(Code.CREATED)
    same = existing.timeout == cmd.timeout
    # Name and Description count only when the request supplies them (spec §3.1 PROPOSAL).
    same = same and (cmd.name is None or cmd.name == existing.name)
    same = same and (cmd.description is None or cmd.description == existing.description)
    if same:
        return Result(Code.OK)
    return Result(Code.CONFLICT, f"Group '{cmd.group_id}' exists with a different configuration.")


def _delete_group(state: ClusterState, cmd: DeleteGroup) -> Result:
    group = state.groups.get(cmd.group_id)
    if group is None:
        return Result(Code.GROUP_NOT_FOUND)
    if group.sessions:
        return Result(
            Code.CONFLICT,
            f"Group '{cmd.group_id}' has {len(group.sessions)} client session(s) and cannot be deleted.",
        )
    del state.groups[cmd.group_id]
    return Result(Code.DELETED)


def _register_session(state: ClusterState, cmd: RegisterSession) -> Result:
    group = state.groups.get(cmd.group_id)
    if group is None:
        return Result(Code.GROUP_NOT_FOUND)
    existing = group.sessions.get(cmd.session_id)
    if existing is not None:
        if cmd.name is None or cmd.name == existing.name:
            return Result(Code.OK)
        return Result(
            Code.CONFLICT, f"Client session '{cmd.session_id}' exists with a different name."
        )
    if 0 < cmd.max_sessions <= len(group.sessions):
        return Result(
            Code.CONFLICT,
            f"Group '{cmd.group_id}' already holds its limit of {cmd.max_sessions} client "
            "sessions (--max-sessions-per-group).",
        )
    group.sessions[cmd.session_id] = Session(
        cmd.session_id, cmd.name, cmd.additional_data, state.next_order
    )
    state.next_order += 1
    group.version += 1
    return Result(Code.CREATED)


def _delete_session(state: ClusterState, cmd: DeleteSession) -> Result:
    group = state.groups.get(cmd.group_id)
    if group is None:
        return Result(Code.GROUP_NOT_FOUND)
    if cmd.session_id not in group.sessions:
        return Result(Code.SESSION_NOT_FOUND)
    old_primary = group.primary
    del group.sessions[cmd.session_id]
    if group.primary == cmd.session_id:
        # P1: deleting a session does not stop its adapter acting on its grant. The leader
        # frees it once the adapter acknowledges or the grant certainly lapsed.
        group.primary = None
        group.releasing = cmd.session_id
    if group.pending == cmd.session_id:
        group.pending = None
    group.version += 1
    if old_primary == cmd.session_id:
        _record(group, cmd.time, old_primary, f"Client '{cmd.session_id}' was deleted", {})
    return Result(Code.DELETED)


def _set_override(state: ClusterState, cmd: SetOverride) -> Result:
    group = state.groups.get(cmd.group_id)
    if group is None:
        return Result(Code.GROUP_NOT_FOUND)
    session = group.sessions.get(cmd.session_id)
    if session is None:
        return Result(Code.SESSION_NOT_FOUND)
    group.version += 1
    if cmd.value == RoleOverride.Off:
        session.override, session.override_expiry = RoleOverride.Off, None
        return Result(Code.OK)
    for other in group.sessions.values():  # at most one override per group
        other.override, other.override_expiry = RoleOverride.Off, None
    session.override, session.override_expiry = RoleOverride.Primary, cmd.expiry
    old = group.primary
    if (old is None and group.releasing in (None, session.id)) or old == session.id:
        # The grant is free (or already ours): the override takes it at once.
        group.pending = None
        group.releasing = None
        if old is None:
            group.primary = session.id
            group.epoch += 1
            _record(group, cmd.time, old, "Role override to Primary", {})
    else:
        # P1: the holder must acknowledge its demotion or its grant expire first; the
        # leader's next evaluation asks it to step down (Group.releasing).
        group.pending = session.id
    return Result(Code.OK, epoch=group.epoch, expiry=cmd.expiry)


def _decide(state: ClusterState, cmd: Decide) -> Result:
    group = state.groups.get(cmd.group_id)
    if group is None:
        return Result(Code.GROUP_NOT_FOUND)
    if group.version != cmd.version:
        return Result(Code.STALE)
    fenced = _fenced(state, cmd.term)
    if fenced is not None:
        return fenced
    for sid in (cmd.primary, cmd.pending):
        if sid is not None and sid not in group.sessions:
            return Result(Code.STALE)
    if cmd.clear_override:
        for session in group.sessions.values():
            if session.override_expiry is not None and session.override_expiry <= cmd.time:
                session.override, session.override_expiry = RoleOverride.Off, None
    old = group.primary
    restored = old is None and cmd.primary is not None and cmd.primary == group.releasing
    if cmd.primary is not None and (cmd.primary != old or cmd.regrant) and not restored:
        group.epoch += 1
    group.primary, group.pending, group.releasing = cmd.primary, cmd.pending, cmd.releasing
    group.version += 1
    if (cmd.primary != old or cmd.regrant) and not restored:
        _record(group, cmd.time, old, cmd.reason, dict(cmd.scores))
    return Result(Code.OK, cmd.reason, epoch=group.epoch)


def _record(
    group: Group, time: int, old: str | None, reason: str, scores: dict[str, float]
) -> None:
    sequence = group.events[-1].sequence + 1 if group.events else 1
    group.events.append(
        RoleEvent(time, group.epoch, old, group.primary, group.pending, reason, scores, sequence)
    )
    del group.events[:-MAX_EVENTS_PER_GROUP]


def _save_checkpoint(state: ClusterState, cmd: SaveCheckpoint) -> Result:
    fenced = _fenced(state, cmd.term)
    if fenced is not None:
        return fenced
    for group_id, session_id, record in cmd.heartbeats:
        group = state.groups.get(group_id)
        session = group.sessions.get(session_id) if group else None
        if session is not None:
            session.heartbeat = record
    for group_id, ticks in cmd.group_times:
        group = state.groups.get(group_id)
        if group is not None:
            group.last_data_processed = max(group.last_data_processed, ticks)
    return Result(Code.OK)


# Commands computed from the leader's own liveness: refused in apply unless their term is the
# current one, and never retried after an ambiguous outcome (Replicator.submit).
TERM_FENCED: tuple[type[Command], ...] = (Decide, SaveCheckpoint)

HANDLERS: Mapping[type[Command], Handler] = {
    CreateGroup: _create_group,
    DeleteGroup: _delete_group,
    RegisterSession: _register_session,
    DeleteSession: _delete_session,
    SetOverride: _set_override,
    Decide: _decide,
    SaveCheckpoint: _save_checkpoint,
}
