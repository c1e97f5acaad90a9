"""Accounts: API users, OAuth clients and token signing keys.

Passwords and secrets arrive hashed and signing keys arrive generated: the API layer owns
randomness and the clock, so these handlers stay pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from cfs_cluster.engine.commands import Code, Command, Handler, Result
from cfs_cluster.engine.upgradable import Upgradable

if TYPE_CHECKING:
    from cfs_cluster.engine.state import ClusterState


class Role(StrEnum):
    """Who may call what (security/roles.ROUTE_ROLES). Records store the plain string
    (``Role.X.value``), so a snapshot names no enum and older releases read it unchanged."""

    USERS = "users"  # adapters
    ADMINISTRATORS = "administrators"
    # No account has it: routes of the members' internal channel, opened only by a member
    # signature (security/memberauth.py).
    MEMBERS = "members"


USERS: str = Role.USERS.value
ADMINISTRATORS: str = Role.ADMINISTRATORS.value
MAX_SIGNING_KEYS = 8  # bound on retired keys kept for verification, whatever the lifetime


@dataclass
class User(Upgradable):
    """An API account. ``password_hash`` is computed before replication (security/passwords.py), never here."""

    name: str
    role: str  # Role.USERS or Role.ADMINISTRATORS, stored as its value
    password_hash: str


@dataclass
class OAuthClient(Upgradable):
    """A client of the client-credentials grant. ``version`` grows with every new secret, and a
    token names the version it was issued under, so a new secret revokes the old tokens."""

    client_id: str
    role: str  # Role.USERS or Role.ADMINISTRATORS, stored as its value
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


@dataclass(frozen=True)
class RotateMemberKey(RotateSigningKey):
    """The same rotation for the members' internal channel key (``ClusterState.member_keys``):
    the leader issues the first one (``only_if_none``); administrators rotate it, and the
    retired key keeps verifying for ``retain`` seconds so no relay in flight is refused."""


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
    if cmd.role is not None and cmd.role != ADMINISTRATORS and _last_admin(state, user.role):
        return _last_admin_conflict("user", cmd.name)
    if cmd.password_hash is not None:
        user.password_hash = cmd.password_hash
    if cmd.role is not None:
        user.role = cmd.role
    return Result(Code.OK)


def _remove_user(state: ClusterState, cmd: RemoveUser) -> Result:
    user = state.users.get(cmd.name)
    if user is None:
        return Result(Code.USER_NOT_FOUND)
    if _last_admin(state, user.role):
        return _last_admin_conflict("user", cmd.name)
    del state.users[cmd.name]
    return Result(Code.DELETED)


def _last_admin(state: ClusterState, role: str) -> bool:
    """Whether an account of ``role`` is the only administrator, users and OAuth clients
    counted together: removing or demoting it would lock everyone out of administration.
    Decided here, in apply, so two concurrent removals through different nodes are ordered by
    the log and the second is refused on every replica."""
    if role != ADMINISTRATORS:
        return False
    users = sum(1 for u in state.users.values() if u.role == ADMINISTRATORS)
    clients = sum(1 for c in state.clients.values() if c.role == ADMINISTRATORS)
    return users + clients == 1


def _last_admin_conflict(kind: str, name: str) -> Result:
    return Result(
        Code.CONFLICT,
        f"The {kind} '{name}' is the last administrator (users and OAuth clients together); "
        "add another administrator first.",
    )


def _add_client(state: ClusterState, cmd: AddClient) -> Result:
    if cmd.client_id in state.clients:
        return Result(Code.CONFLICT, f"Client '{cmd.client_id}' already exists.")
    state.clients[cmd.client_id] = OAuthClient(cmd.client_id, cmd.role, cmd.secret_hash)
    return Result(Code.CREATED)


def _update_client(state: ClusterState, cmd: UpdateClient) -> Result:
    client = state.clients.get(cmd.client_id)
    if client is None:
        return Result(Code.CLIENT_NOT_FOUND)
    if cmd.role is not None and cmd.role != ADMINISTRATORS and _last_admin(state, client.role):
        return _last_admin_conflict("client", cmd.client_id)
    if cmd.role is not None:
        client.role = cmd.role
    if cmd.secret_hash is not None:
        client.secret_hash = cmd.secret_hash
        client.version += 1
    return Result(Code.OK)


def _remove_client(state: ClusterState, cmd: RemoveClient) -> Result:
    client = state.clients.get(cmd.client_id)
    if client is None:
        return Result(Code.CLIENT_NOT_FOUND)
    if _last_admin(state, client.role):
        return _last_admin_conflict("client", cmd.client_id)
    del state.clients[cmd.client_id]
    return Result(Code.DELETED)


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


HANDLERS: Mapping[type[Command], Handler] = {
    AddUser: _add_user,
    UpdateUser: _update_user,
    RemoveUser: _remove_user,
    AddClient: _add_client,
    UpdateClient: _update_client,
    RemoveClient: _remove_client,
    RotateSigningKey: _rotate_signing_key,
    RotateMemberKey: _rotate_member_key,
}
