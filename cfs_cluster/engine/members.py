"""Cluster members and Raft terms: published API URLs and certificates, the opened term."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cfs_cluster.engine.commands import Code, Command, Handler, Result
from cfs_cluster.engine.upgradable import Upgradable

if TYPE_CHECKING:
    from cfs_cluster.engine.state import ClusterState


@dataclass
class Member(Upgradable):
    node_id: str
    raft: str
    api_url: str
    # PEM of the API certificate when TLS is on, so the other members' relays can trust a
    # self-signed certificate without a shared CA; "" = plain HTTP or not published yet.
    certificate: str = ""
    # What this member's release can apply beyond the commands every release knows
    # (commands.BATCH_FEATURE); () for a member of an earlier release.
    features: tuple[str, ...] = ()


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
    features: tuple[str, ...] = ()


def _register_member(state: ClusterState, cmd: RegisterMember) -> Result:
    features = tuple(f for f in cmd.features if isinstance(f, str))
    state.members[cmd.node_id] = Member(
        cmd.node_id, cmd.raft, cmd.api_url, cmd.certificate, features
    )
    return Result(Code.OK)


def _remove_member(state: ClusterState, cmd: RemoveMember) -> Result:
    for node_id in [m.node_id for m in state.members.values() if m.raft == cmd.raft]:
        del state.members[node_id]
    return Result(Code.OK)


def _open_term(state: ClusterState, cmd: OpenTerm) -> Result:
    state.opened_term = max(state.opened_term, cmd.term)
    return Result(Code.OK)


HANDLERS: Mapping[type[Command], Handler] = {
    RegisterMember: _register_member,
    RemoveMember: _remove_member,
    OpenTerm: _open_term,
}
