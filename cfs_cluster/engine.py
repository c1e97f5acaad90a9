"""The failover engine: pure state, commands and rules. No HTTP, no Raft, no threads, no clock.

Theory of operation
-------------------
The replicated state (``ClusterState``) holds every group, its sessions, and per group the
session holding the Primary grant (``primary``), the candidate waiting for it (``pending``), the
grant counter (``epoch``) and a version that changes with every role or membership change.

``apply(state, command)`` is the only way state changes. It is *total* (never raises: an
exception here would wedge pysyncobj on every node), *deterministic* (times and ids arrive inside
the command) and *idempotent* (a command whose request id was applied before returns the earlier
result and changes nothing).

Role decisions depend on liveness, which only the Raft leader knows (heartbeats are not
replicated). The leader calls ``evaluate(group, view)`` with what it has heard, and replicates the
returned ``Decide`` command; ``Decide`` carries the group version it was computed from and is
refused (``STALE``) if anything changed meanwhile, so decisions are compare-and-set.

The rules (spec §4.3, design.md P1):

1. An unexpired Primary override wins regardless of liveness and score.
2. A group with one session promotes it straight to Primary when it is live.
3. Otherwise the live session with the highest FailoverScore is the candidate; the incumbent
   keeps the role while it is live and its score is >= the candidate's (ties never flip).
4. A session is live when its last heartbeat is at most FailoverTimeout old.
5. The holder of a grant keeps it until it is *released*: it was answered Secondary (its own
   heartbeat), its grant certainly expired (no heartbeat for FailoverTimeout + margin), or its
   session was deleted (the adapter's own resignation). Until then the candidate stays
   PendingPrimary: at most one session ever holds a valid grant (P1).
6. Once the grant is free, an override target or a lone session is granted Primary at once; any
   other candidate is told PendingPrimary and granted Primary on its next heartbeat (a heartbeat
   that arrives while it already is the pending candidate; ``LivenessView.sender_was_pending``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from .config import GlobalConfig, HealthEndpoint
from .upgradable import Upgradable
from .wire import TICKS_PER_SECOND, ClientRole, RoleOverride

__all__ = [
    "ClusterState",
    "Code",
    "Command",
    "CreateGroup",
    "Decide",
    "DeleteGroup",
    "DeleteSession",
    "Group",
    "HeartbeatRecord",
    "LivenessView",
    "Member",
    "RegisterMember",
    "RegisterSession",
    "Result",
    "RotateMemberKey",
    "SaveCheckpoint",
    "Session",
    "SetOverride",
    "apply",
    "evaluate",
    "role_of",
]

# Applied request ids kept for deduplication; retries come within seconds, this covers hours.
MAX_REMEMBERED_REQUESTS = 50_000
MAX_EVENTS_PER_GROUP = 100


# --------------------------------------------------------------------------- state


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
    epoch: int = 0
    version: int = 0
    last_data_processed: int = 0  # UTC ticks, 0 = unknown
    events: list[RoleEvent] = field(default_factory=list)

    @property
    def timeout_seconds(self) -> float:
        return self.timeout / TICKS_PER_SECOND


@dataclass
class Member(Upgradable):
    node_id: str
    raft: str
    api_url: str
    # PEM of the API certificate when TLS is on, so the other members' relays can trust a
    # self-signed certificate without a shared CA; "" = plain HTTP or not published yet.
    certificate: str = ""


@dataclass
class User(Upgradable):
    """An API account. ``password_hash`` is computed before replication (auth.py), never here."""

    name: str
    role: str  # "users" | "administrators"
    password_hash: str


@dataclass
class ClusterState(Upgradable):
    groups: dict[str, Group] = field(default_factory=dict)
    members: dict[str, Member] = field(default_factory=dict)
    applied: OrderedDict[str, Result] = field(default_factory=OrderedDict)
    next_order: int = 0
    users: dict[str, User] = field(default_factory=dict)  # API accounts (auth.py)
    config: GlobalConfig = field(default_factory=GlobalConfig)  # log level, health endpoints
    opened_term: int = 0  # the Raft term whose leader's OpenTerm entry was applied last
    # OAuth client credentials (the section at the end of this module; tokens.py).
    clients: dict[str, OAuthClient] = field(default_factory=dict)
    signing_keys: list[SigningKey] = field(default_factory=list)  # newest (the signer) last
    # Keys of the members' internal channel (memberauth.py), newest (the signer) last.
    member_keys: list[SigningKey] = field(default_factory=list)


def role_of(group: Group, session_id: str) -> ClientRole:
    if group.primary == session_id:
        return ClientRole.Primary
    if group.pending == session_id:
        return ClientRole.PendingPrimary
    return ClientRole.Secondary


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Command(Upgradable):
    request_id: str


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
    """A role decision of the leader, applied only if the group is still at ``version``."""

    group_id: str
    version: int
    primary: str | None
    pending: str | None
    clear_override: bool
    reason: str
    time: int
    scores: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class SaveCheckpoint(Command):
    """Scores and data times the leader heard, so a new leader starts from recent values."""

    heartbeats: tuple[tuple[str, str, HeartbeatRecord], ...]
    group_times: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class RemoveMember(Command):
    """Forget a member's published API URL (the Raft voter itself is removed by pysyncobj)."""

    raft: str


@dataclass(frozen=True)
class OpenTerm(Command):
    """A new leader's first write. Once it is applied on a node, that node has applied every
    entry committed before the term began (Raft §8: a leader learns what is committed only by
    committing an entry of its own term), so its state may be read and decided on."""

    term: int


@dataclass(frozen=True)
class RegisterMember(Command):
    node_id: str
    raft: str
    api_url: str
    certificate: str = ""


@dataclass(frozen=True)
class AddUser(Command):
    """Create a user; with ``if_no_users`` only while the cluster has none (bootstrap)."""

    name: str
    role: str
    password_hash: str
    if_no_users: bool = False


@dataclass(frozen=True)
class UpdateUser(Command):
    """Change a user's password hash and/or role (None = keep)."""

    name: str
    password_hash: str | None = None
    role: str | None = None


@dataclass(frozen=True)
class RemoveUser(Command):
    name: str


class Code(StrEnum):
    CREATED = "created"
    OK = "ok"
    DELETED = "deleted"
    GROUP_NOT_FOUND = "group_not_found"
    SESSION_NOT_FOUND = "session_not_found"
    CONFLICT = "conflict"
    STALE = "stale"
    INVALID = "invalid"
    USER_NOT_FOUND = "user_not_found"
    CLIENT_NOT_FOUND = "client_not_found"
    ENDPOINT_NOT_FOUND = "endpoint_not_found"


@dataclass(frozen=True)
class Result:
    code: Code
    detail: str = ""
    epoch: int = 0
    expiry: int | None = None


# --------------------------------------------------------------------------- apply


def apply(state: ClusterState, command: Command) -> Result:
    """Apply one committed command. Total: any unexpected failure becomes an INVALID result."""
    # Fix: this lookup ran outside any guard, so a log entry that is not a Command (no
    # request_id) or has an unhashable request_id raised AttributeError/TypeError here.
    try:
        earlier = state.applied.get(command.request_id)
    except Exception as exc:
        return Result(Code.INVALID, f"not a command: {type(exc).__name__}: {exc}")
    if earlier is not None:
        return earlier
    handler = _HANDLERS.get(type(command))
    if handler is None:
        result = Result(Code.INVALID, f"unknown command {type(command).__name__}")
    else:
        try:
            result = handler(state, command)
        except Exception as exc:  # an exception here would wedge every replica
            result = Result(Code.INVALID, f"{type(exc).__name__}: {exc}")
    if not isinstance(command, SaveCheckpoint | Decide | OpenTerm):
        _remember(state, command.request_id, result)
    return result


def _remember(state: ClusterState, request_id: str, result: Result) -> None:
    state.applied[request_id] = result
    while len(state.applied) > MAX_REMEMBERED_REQUESTS:
        state.applied.popitem(last=False)


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
        group.primary = None
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
    if old is None or old == session.id:
        # The grant is free (or already ours): the override takes it at once.
        group.pending = None
        if old is None:
            group.primary = session.id
            group.epoch += 1
            _record(group, cmd.time, old, "Role override to Primary", {})
    else:
        # P1: the current holder must be answered Secondary (or expire) first.
        group.pending = session.id
    return Result(Code.OK, epoch=group.epoch, expiry=cmd.expiry)


def _decide(state: ClusterState, cmd: Decide) -> Result:
    group = state.groups.get(cmd.group_id)
    if group is None:
        return Result(Code.GROUP_NOT_FOUND)
    if group.version != cmd.version:
        return Result(Code.STALE)
    for sid in (cmd.primary, cmd.pending):
        if sid is not None and sid not in group.sessions:
            return Result(Code.STALE)
    if cmd.clear_override:
        for session in group.sessions.values():
            if session.override_expiry is not None and session.override_expiry <= cmd.time:
                session.override, session.override_expiry = RoleOverride.Off, None
    old = group.primary
    if cmd.primary is not None and cmd.primary != old:
        group.epoch += 1
    group.primary, group.pending = cmd.primary, cmd.pending
    group.version += 1
    if cmd.primary != old:
        _record(group, cmd.time, old, cmd.reason, dict(cmd.scores))
    return Result(Code.OK, cmd.reason, epoch=group.epoch)


def _record(
    group: Group, time: int, old: str | None, reason: str, scores: dict[str, float]
) -> None:
    group.events.append(
        RoleEvent(time, group.epoch, old, group.primary, group.pending, reason, scores)
    )
    del group.events[:-MAX_EVENTS_PER_GROUP]


def _save_checkpoint(state: ClusterState, cmd: SaveCheckpoint) -> Result:
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


def _register_member(state: ClusterState, cmd: RegisterMember) -> Result:
    state.members[cmd.node_id] = Member(cmd.node_id, cmd.raft, cmd.api_url, cmd.certificate)
    return Result(Code.OK)


ADMINISTRATORS = "administrators"


def _add_user(state: ClusterState, cmd: AddUser) -> Result:
    if cmd.if_no_users and state.users:
        return Result(Code.OK, "users exist; bootstrap skipped")
    if cmd.name in state.users:
        return Result(Code.CONFLICT, f"User '{cmd.name}' already exists.")
    state.users[cmd.name] = User(cmd.name, cmd.role, cmd.password_hash)
    return Result(Code.CREATED)


def _update_user(state: ClusterState, cmd: UpdateUser) -> Result:
    user = state.users.get(cmd.name)
    if user is None:
        return Result(Code.USER_NOT_FOUND)
    if cmd.role is not None and cmd.role != ADMINISTRATORS and _last_admin(state, cmd.name):
        return Result(Code.CONFLICT, f"'{cmd.name}' is the last administrator.")
    if cmd.password_hash is not None:
        user.password_hash = cmd.password_hash
    if cmd.role is not None:
        user.role = cmd.role
    return Result(Code.OK)


def _remove_user(state: ClusterState, cmd: RemoveUser) -> Result:
    if cmd.name not in state.users:
        return Result(Code.USER_NOT_FOUND)
    if _last_admin(state, cmd.name):
        return Result(Code.CONFLICT, f"'{cmd.name}' is the last administrator.")
    del state.users[cmd.name]
    return Result(Code.DELETED)


def _remove_member(state: ClusterState, cmd: RemoveMember) -> Result:
    for node_id in [m.node_id for m in state.members.values() if m.raft == cmd.raft]:
        del state.members[node_id]
    return Result(Code.OK)


def _open_term(state: ClusterState, cmd: OpenTerm) -> Result:
    state.opened_term = max(state.opened_term, cmd.term)
    return Result(Code.OK)


def _last_admin(state: ClusterState, name: str) -> bool:
    """Removing or demoting the last administrator would lock everyone out of user management."""
    admins = [u.name for u in state.users.values() if u.role == ADMINISTRATORS]
    return admins == [name]


_HANDLERS: dict[type[Command], Any] = {
    CreateGroup: _create_group,
    DeleteGroup: _delete_group,
    RegisterSession: _register_session,
    DeleteSession: _delete_session,
    SetOverride: _set_override,
    Decide: _decide,
    SaveCheckpoint: _save_checkpoint,
    RegisterMember: _register_member,
    OpenTerm: _open_term,
    RemoveMember: _remove_member,
    AddUser: _add_user,
    UpdateUser: _update_user,
    RemoveUser: _remove_user,
}


# --------------------------------------------------------------------------- evaluate


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


def with_version(decision: Decide, version: int) -> Decide:
    return replace(decision, version=version, request_id=f"decide:{decision.group_id}:{version}")


# --------------------------------------------------------------------------- global configuration
# Values arrive validated (config.py); these handlers only store them, so they cannot fail.


@dataclass(frozen=True)
class SetConfiguration(Command):
    """PUT /configuration: a None section stays unchanged."""

    log_level: str | None = None
    health_endpoints: tuple[HealthEndpoint, ...] | None = None


@dataclass(frozen=True)
class AddHealthEndpoints(Command):
    """POST: adds all or nothing; refused if any Id exists (ids compare case-insensitively)."""

    endpoints: tuple[HealthEndpoint, ...]


@dataclass(frozen=True)
class UpdateHealthEndpoint(Command):
    endpoint: HealthEndpoint


@dataclass(frozen=True)
class DeleteHealthEndpoint(Command):
    endpoint_id: str


def _config(state: ClusterState) -> GlobalConfig:
    # getattr: a snapshot written before the configuration existed unpickles without it.
    config = getattr(state, "config", None)
    return config if isinstance(config, GlobalConfig) else GlobalConfig()


def _set_configuration(state: ClusterState, cmd: SetConfiguration) -> Result:
    config = _config(state)
    if cmd.log_level is not None:
        config = replace(config, log_level=cmd.log_level)
    if cmd.health_endpoints is not None:
        config = replace(config, health_endpoints=tuple(cmd.health_endpoints))
    state.config = config
    return Result(Code.OK)


def _add_health_endpoints(state: ClusterState, cmd: AddHealthEndpoints) -> Result:
    config = _config(state)
    existing = {e.id.lower() for e in config.health_endpoints}
    clash = [e.id for e in cmd.endpoints if e.id.lower() in existing]
    if clash:
        return Result(Code.CONFLICT, f"Health endpoint(s) already exist: {', '.join(clash)}.")
    state.config = replace(config, health_endpoints=(*config.health_endpoints, *cmd.endpoints))
    return Result(Code.CREATED)


def _update_health_endpoint(state: ClusterState, cmd: UpdateHealthEndpoint) -> Result:
    config = _config(state)
    wanted = cmd.endpoint.id.lower()
    if not any(e.id.lower() == wanted for e in config.health_endpoints):
        return Result(
            Code.ENDPOINT_NOT_FOUND, f"Health endpoint '{cmd.endpoint.id}' was not found."
        )
    endpoints = tuple(
        cmd.endpoint if e.id.lower() == wanted else e for e in config.health_endpoints
    )
    state.config = replace(config, health_endpoints=endpoints)
    return Result(Code.OK)


def _delete_health_endpoint(state: ClusterState, cmd: DeleteHealthEndpoint) -> Result:
    config = _config(state)
    wanted = cmd.endpoint_id.lower()
    kept = tuple(e for e in config.health_endpoints if e.id.lower() != wanted)
    if len(kept) == len(config.health_endpoints):
        return Result(
            Code.ENDPOINT_NOT_FOUND, f"Health endpoint '{cmd.endpoint_id}' was not found."
        )
    state.config = replace(config, health_endpoints=kept)
    return Result(Code.DELETED)


_HANDLERS.update(
    {
        SetConfiguration: _set_configuration,
        AddHealthEndpoints: _add_health_endpoints,
        UpdateHealthEndpoint: _update_health_endpoint,
        DeleteHealthEndpoint: _delete_health_endpoint,
    }
)


# --------------------------------------------------------------------------- OAuth clients, signing keys
# Issue 5 §2 (tokens.py, api/identity.py, api/clients.py). Secrets arrive hashed and signing keys
# arrive generated: the API layer owns randomness and the clock, so these handlers stay pure.

MAX_SIGNING_KEYS = 8  # bound on retired keys kept for verification, whatever the lifetime


@dataclass
class OAuthClient(Upgradable):
    """A client of the client-credentials grant. ``version`` grows with every new secret, and a
    token names the version it was issued under, so a new secret revokes the old tokens."""

    client_id: str
    role: str  # "users" | "administrators"
    secret_hash: str
    version: int = 0


@dataclass
class SigningKey(Upgradable):
    """An HMAC-SHA256 token key. The newest key signs; a retired one still verifies until the
    last token it may have signed has expired (``retired_at`` + the token lifetime)."""

    kid: str
    secret: str  # hex
    created_at: int  # Unix seconds, from the node that generated it
    retired_at: int | None = None


@dataclass(frozen=True)
class AddClient(Command):
    client_id: str
    role: str
    secret_hash: str


@dataclass(frozen=True)
class UpdateClient(Command):
    """Change a client's role and/or secret (None = keep)."""

    client_id: str
    role: str | None = None
    secret_hash: str | None = None


@dataclass(frozen=True)
class RemoveClient(Command):
    client_id: str


@dataclass(frozen=True)
class RotateSigningKey(Command):
    """Make ``kid`` the signing key; retire the current one and drop keys retired longer than
    ``retain`` seconds ago. With ``only_if_none`` it only creates the first key (any node may
    race to do that; the first applied wins)."""

    kid: str
    secret: str
    time: int  # Unix seconds
    retain: int  # seconds: the token lifetime
    only_if_none: bool = False


def _add_client(state: ClusterState, cmd: AddClient) -> Result:
    if cmd.client_id in state.clients:
        return Result(Code.CONFLICT, f"Client '{cmd.client_id}' already exists.")
    state.clients[cmd.client_id] = OAuthClient(cmd.client_id, cmd.role, cmd.secret_hash)
    return Result(Code.CREATED)


def _update_client(state: ClusterState, cmd: UpdateClient) -> Result:
    client = state.clients.get(cmd.client_id)
    if client is None:
        return Result(Code.CLIENT_NOT_FOUND)
    if cmd.role is not None:
        client.role = cmd.role
    if cmd.secret_hash is not None:
        client.secret_hash = cmd.secret_hash
        client.version += 1
    return Result(Code.OK)


def _remove_client(state: ClusterState, cmd: RemoveClient) -> Result:
    if state.clients.pop(cmd.client_id, None) is None:
        return Result(Code.CLIENT_NOT_FOUND)
    return Result(Code.DELETED)


@dataclass(frozen=True)
class RotateMemberKey(RotateSigningKey):
    """The same rotation for the members' internal channel key (``ClusterState.member_keys``):
    the leader issues the first one (``only_if_none``); administrators rotate it, and the
    retired key keeps verifying for ``retain`` seconds so no relay in flight is refused."""


def _rotate_signing_key(state: ClusterState, cmd: RotateSigningKey) -> Result:
    rotated = _rotated(state.signing_keys, cmd, "Signing key")
    if isinstance(rotated, Result):
        return rotated
    state.signing_keys = rotated  # one assignment: readers see old or new
    return Result(Code.CREATED)


def _rotate_member_key(state: ClusterState, cmd: RotateMemberKey) -> Result:
    rotated = _rotated(state.member_keys, cmd, "Member key")
    if isinstance(rotated, Result):
        return rotated
    state.member_keys = rotated
    return Result(Code.CREATED)


def _rotated(keys: list[SigningKey], cmd: RotateSigningKey, what: str) -> list[SigningKey] | Result:
    """The key list after ``cmd``, or the Result that leaves it unchanged."""
    if cmd.only_if_none and keys:
        return Result(Code.OK, f"{what} exists")
    if any(k.kid == cmd.kid for k in keys):
        return Result(Code.CONFLICT, f"{what} '{cmd.kid}' exists.")
    for key in keys:
        if key.retired_at is None:
            key.retired_at = cmd.time
    kept = [k for k in keys if k.retired_at is None or k.retired_at + cmd.retain > cmd.time]
    kept.append(SigningKey(cmd.kid, cmd.secret, cmd.time))
    return kept[-MAX_SIGNING_KEYS:]


_HANDLERS.update(
    {
        AddClient: _add_client,
        UpdateClient: _update_client,
        RemoveClient: _remove_client,
        RotateSigningKey: _rotate_signing_key,
        RotateMemberKey: _rotate_member_key,
    }
)
