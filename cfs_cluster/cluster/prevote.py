"""Raft's pre-vote (thesis §9.6) for pysyncobj: a node raises its term only when it could win.

pysyncobj starts an election whenever a node's election deadline passes and it is connected to
anyone: it raises its term and asks for votes, and every node that sees the higher term steps
down, the leader included. Nodes outside the committed configuration did exactly that: a node
started with ``--peers`` before ``cfs cluster add-node`` named it dialled the members, saw the
connection accepted (then dropped: it is unknown to them) and campaigned alone, so once added
its term deposed the leader (issue 13 item 7: term 1 -> 6); a removed node, which never learns
of its removal, went on campaigning the same way.

So before it campaigns, a node asks every member it knows whether it *would* get their vote,
without raising any term. A member says yes only if it is not the leader, has not heard a
leader within ``raft_min_timeout - 2 x append_entries_period`` (a working leader is left
alone), and the asking node's log
is at least as up to date as its own. Only with a majority of yeses (itself included) does the
node let pysyncobj campaign. A node outside the configuration never gets one: its messages are
dropped by the members, and with an empty log (a node being added) or while the leader works
(a removed one) they would say no anyway. A leadership transfer (pysyncobj's TimeoutNow) skips
the round, as the thesis says: the leader asked for that election.

The only change to pysyncobj's behaviour is when its election deadline counts as passed; the
vote itself is pysyncobj's. Nodes of an earlier release ignore the question, so during a
rolling upgrade a node of this release gets yeses only from upgraded peers, while the older
ones still campaign as before.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import pysyncobj.syncobj as pysyncobj_module
from pysyncobj import SyncObjConf

from cfs_cluster.storage.durable import DurableSyncObj
from cfs_cluster.storage.journal import Storage

__all__ = ["PRE_VOTE", "PRE_VOTE_YES", "PreVotingSyncObj"]

log = logging.getLogger("cfs.replication")

PRE_VOTE = "cfs_pre_vote"  # would you vote for me? (no term is raised by asking)
PRE_VOTE_YES = "cfs_pre_vote_yes"
_LEADER = 2  # pysyncobj's _RAFT_STATE.LEADER
# Seconds before a round that found no majority is asked again. Short: a member that heard
# the (now dead) leader's last append_entries a few milliseconds after this node did still
# says no to the first round, and waiting a whole election timeout would lengthen every
# failover. Rounds raise no term, so asking often disturbs nobody.
_RETRY = (0.05, 0.15)


class PreVotingSyncObj(DurableSyncObj):
    """DurableSyncObj that holds its election deadline back until a pre-vote round is won.

    Everything here runs on pysyncobj's tick thread. Times are on pysyncobj's own clock (its
    election deadline is), never compared with ``time.monotonic``.
    """

    _SyncObj__raftElectionDeadline: float  # pysyncobj's, read and moved here

    def __init__(
        self,
        self_node: str,
        other_nodes: list[str],
        conf: SyncObjConf,
        consumers: list[Any],
        storage: Storage,
    ) -> None:
        # Set before SyncObj.__init__, which treats later attributes as replicated state.
        self._pre_round = 0  # number of this node's latest round
        self._pre_yes: set[Any] = set()  # members that said yes in that round
        self._pre_won = False  # that round has a majority: campaign on the next tick
        self._leader_heard_at: float | None = None  # last append_entries we accepted
        # "Heard a leader recently": a working leader sends every append_entries_period, so
        # a little under raft_min_timeout still means it works, and a member that heard the
        # dead leader's last message a few milliseconds after the asker does not say no to
        # the asker's first round (that would cost a retry and invite a split vote).
        period = conf.appendEntriesPeriod
        self._stickiness = max(conf.raftMinTimeout / 2, conf.raftMinTimeout - 2 * period)
        super().__init__(self_node, other_nodes, conf, consumers, storage)

    # ----------------------------------------------------------------- asking

    def _onTick(self, timeToWait: float = 0.0) -> None:
        self._hold_election_back()
        super()._onTick(timeToWait)

    def _hold_election_back(self) -> None:
        """Before pysyncobj's own check: a passed deadline without a won round becomes a
        round (and a fresh deadline) instead of an election."""
        if self._SyncObj__raftState == _LEADER or self._SyncObj__selfNode is None:
            self._pre_won = False
            return
        if self._SyncObj__transferInProgress:
            return  # TimeoutNow from our leader: campaign at once
        now = raft_clock()
        if self._SyncObj__raftElectionDeadline >= now:
            return
        if self._pre_won:
            self._pre_won = False  # spent: pysyncobj campaigns in this tick (if connected)
            return
        self._SyncObj__raftElectionDeadline = now + random.uniform(*_RETRY)
        self._ask()

    def _ask(self) -> None:
        self._pre_round += 1
        self._pre_yes = set()
        question = {
            "type": PRE_VOTE,
            "round": self._pre_round,
            "term": self._SyncObj__raftCurrentTerm + 1,  # the term it would campaign in
            "last_log_index": self._SyncObj__getCurrentLogIndex(),
            "last_log_term": self._SyncObj__getCurrentLogTerm(),
        }
        for node in self._SyncObj__otherNodes:
            self._SyncObj__transport.send(node, question)
        self._count()  # a lone node wins at once

    def _count(self) -> None:
        voters = len(self._SyncObj__otherNodes) + 1
        if (len(self._pre_yes) + 1) * 2 > voters:
            self._pre_won = True
            self._SyncObj__raftElectionDeadline = 0.0  # campaign on the next tick

    # ----------------------------------------------------------------- answering

    def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == PRE_VOTE:
            self._answer(node, message)
            return
        if kind == PRE_VOTE_YES:
            if message.get("round") == self._pre_round and node in self._SyncObj__otherNodes:
                self._pre_yes.add(node)
                self._count()
            return
        if kind == "append_entries" and _term(message) >= self._SyncObj__raftCurrentTerm:
            self._leader_heard_at = raft_clock()  # pysyncobj accepts it: a working leader
            self._pre_won = False  # a round won before it is stale: ask again next time
        super()._SyncObj__onMessageReceived(node, message)

    def _answer(self, node: Any, message: dict[str, Any]) -> None:
        """Say yes (silence is no) if this node would vote for the asker now."""
        if node not in self._SyncObj__otherNodes or self._SyncObj__raftState == _LEADER:
            return
        heard = self._leader_heard_at
        if heard is not None and raft_clock() - heard < self._stickiness:
            return  # our leader is alive: leave it alone
        theirs = (message.get("last_log_term"), message.get("last_log_index"))
        if not all(isinstance(v, int) for v in theirs):
            return
        ours = (self._SyncObj__getCurrentLogTerm(), self._SyncObj__getCurrentLogIndex())
        if theirs < ours:
            return  # it could not win: our vote would go to a node with a newer log
        answer = {"type": PRE_VOTE_YES, "round": message.get("round")}
        self._SyncObj__transport.send(node, answer)


def raft_clock() -> float:
    """pysyncobj's clock, looked up as pysyncobj looks it up (the election deadline is on it;
    tests/unit/test_lease.py offsets it by +-2 s)."""
    return float(pysyncobj_module.monotonicTime())


def _term(message: dict[str, Any]) -> int:
    term = message.get("term")
    return term if isinstance(term, int) else -1
