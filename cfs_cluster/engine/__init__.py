"""The failover engine: pure state, commands and rules. No HTTP, no Raft, no threads, no clock.

One module per state machine — ``failover`` (groups, sessions, roles), ``members`` (Raft members and
terms), ``accounts`` (users, OAuth clients, signing keys), ``configuration`` (log level, health
endpoints) — each with its records, commands and handlers; ``state`` holds the root they hang
from, ``dispatch`` the one handler table and ``apply``, ``decisions`` the role rules below.

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
5. The holder of a grant keeps counting as one until it is *freed*: it acknowledged (its
   heartbeat says it acts on no grant up to the current epoch) or its last Primary answer
   certainly lapsed (FailoverTimeout + margin since the leader composed it). Being answered
   Secondary frees nothing (the answer may be lost), nor does deleting its session. A live
   holder that must hand over is told Secondary meanwhile (``Group.releasing``); the candidate
   stays PendingPrimary until the grant is free: at most one session ever holds a valid grant
   (P1). ``Decide`` carries its Raft term and is refused once another term has opened.
6. Once the grant is free, an override target or a lone session is granted Primary at once; any
   other candidate is told PendingPrimary and granted Primary on its next heartbeat (a heartbeat
   that arrives while it already is the pending candidate; ``LivenessView.sender_was_pending``).
"""

from __future__ import annotations

from cfs_cluster.engine.accounts import (
    ADMINISTRATORS,
    USERS,
    AddClient,
    AddUser,
    OAuthClient,
    RemoveClient,
    RemoveUser,
    Role,
    RotateMemberKey,
    RotateSigningKey,
    SigningKey,
    UpdateClient,
    UpdateUser,
    User,
)
from cfs_cluster.engine.commands import BATCH_FEATURE, Batch, Code, Command, Result
from cfs_cluster.engine.configuration import (
    AddHealthEndpoints,
    DeleteHealthEndpoint,
    SetConfiguration,
    UpdateHealthEndpoint,
)
from cfs_cluster.engine.decisions import LivenessView, evaluate
from cfs_cluster.engine.dispatch import apply
from cfs_cluster.engine.failover import (
    TERM_FENCED,
    CreateGroup,
    Decide,
    DeleteGroup,
    DeleteSession,
    Group,
    HeartbeatRecord,
    RegisterSession,
    RoleEvent,
    SaveCheckpoint,
    Session,
    SetOverride,
    role_of,
)
from cfs_cluster.engine.members import Member, OpenTerm, RegisterMember, RemoveMember
from cfs_cluster.engine.persisted import keep_pickled_names
from cfs_cluster.engine.state import ClusterState

__all__ = [
    "USERS",
    "AddClient",
    "AddHealthEndpoints",
    "AddUser",
    "ADMINISTRATORS",
    "apply",
    "ClusterState",
    "BATCH_FEATURE",
    "Batch",
    "Code",
    "Command",
    "CreateGroup",
    "Decide",
    "DeleteGroup",
    "DeleteHealthEndpoint",
    "DeleteSession",
    "evaluate",
    "Group",
    "HeartbeatRecord",
    "LivenessView",
    "Member",
    "OAuthClient",
    "OpenTerm",
    "RegisterMember",
    "RegisterSession",
    "RemoveClient",
    "RemoveMember",
    "RemoveUser",
    "Role",
    "Result",
    "role_of",
    "RoleEvent",
    "RotateMemberKey",
    "RotateSigningKey",
    "SaveCheckpoint",
    "Session",
    "SetConfiguration",
    "SetOverride",
    "SigningKey",
    "TERM_FENCED",
    "UpdateClient",
    "UpdateHealthEndpoint",
    "UpdateUser",
    "User",
]

keep_pickled_names()
