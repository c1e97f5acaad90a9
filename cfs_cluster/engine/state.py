"""The replicated state: every state machine's records under one root that Raft snapshots."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from cfs_cluster.engine.accounts import OAuthClient, SigningKey, User
from cfs_cluster.engine.commands import Result
from cfs_cluster.engine.configuration import GlobalConfig
from cfs_cluster.engine.failover import Group
from cfs_cluster.engine.members import Member
from cfs_cluster.engine.upgradable import Upgradable


@dataclass
class ClusterState(Upgradable):
    groups: dict[str, Group] = field(default_factory=dict)
    members: dict[str, Member] = field(default_factory=dict)
    applied: OrderedDict[str, Result] = field(default_factory=OrderedDict)
    next_order: int = 0
    users: dict[str, User] = field(default_factory=dict)  # API accounts (security/auth.py)
    config: GlobalConfig = field(default_factory=GlobalConfig)  # log level, health endpoints
    opened_term: int = 0  # the Raft term whose leader's OpenTerm entry was applied last
    # OAuth client credentials (the section at the end of this module; tokens.py).
    clients: dict[str, OAuthClient] = field(default_factory=dict)
    signing_keys: list[SigningKey] = field(default_factory=list)  # newest (the signer) last
    # Keys of the members' internal channel (security/memberauth.py), newest (the signer) last.
    member_keys: list[SigningKey] = field(default_factory=list)
