"""Runtime membership changes and leadership transfer, run on the Raft leader.

One voter at a time (pysyncobj implements Raft's single-server changes, not joint consensus),
and only changes that keep the cluster able to commit:

- adding a node requires its Raft port to accept connections *before* the change: a voter that
  never comes up raises the quorum without adding a vote (3 → 4 members needs 3 votes);
- removing a node requires a majority of the *remaining* members to be reachable from the
  leader, so the change itself, and every write after it, can commit;
- removing the leader first hands leadership to a caught-up follower (pysyncobj cannot remove
  the node that appends the entry).

The HTTP layer forwards these requests to the leader, whose view of reachability is the one
that decides whether a change can commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from dataclasses import dataclass

from cfs_cluster import engine
from cfs_cluster.cluster.replication import Replicator
from cfs_cluster.errors import BadRequest, Conflict, NotFound, Unavailable
from cfs_cluster.settings import RaftSettings

__all__ = ["HANDED_OVER", "MemberChange", "Membership", "parse_raft_address"]

log = logging.getLogger("cfs.membership")

_ADDRESS = re.compile(r"^(?P<host>[A-Za-z0-9.\-]{1,253}|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})$")
REACH_TIMEOUT = 2.0  # seconds to open a TCP connection to a node being added
CATCH_UP_TIMEOUT = 15.0  # seconds an added node gets to replicate the log before we answer
TRANSFER_TIMEOUT = 5.0  # seconds for a leadership transfer to complete
HANDED_OVER = "handed-over"  # remove(self): leadership moved; send the request to the new leader


@dataclass(frozen=True)
class MemberChange:
    """What a change did, for the API answer and the log."""

    action: str
    raft: str
    voters: tuple[str, ...]
    leader: str | None
    caught_up: bool | None = None


def parse_raft_address(value: object) -> str:
    """``host:port`` as pysyncobj expects it; anything else is a 400 naming the field."""
    if not isinstance(value, str) or not (match := _ADDRESS.match(value.strip())):
        raise BadRequest("Raft must be a 'host:port' address, e.g. '10.0.0.14:5690'.")
    if not 1 <= int(match["port"]) <= 65535:
        raise BadRequest("Raft port must be between 1 and 65535.")
    return value.strip()


class Membership:
    def __init__(self, replicator: Replicator, raft: RaftSettings, request_timeout: float) -> None:
        self._replicator = replicator
        self._raft = raft
        self._timeout = request_timeout
        self._lock = asyncio.Lock()  # one change at a time from this node

    # ----------------------------------------------------------------- add

    async def add(self, raft: object) -> MemberChange:
        address = parse_raft_address(raft)
        async with self._lock:
            self._require_leader()
            if address in self._replicator.voters():
                raise Conflict(f"{address} is already a member of the cluster.")
            await _require_reachable(address)
            await self._commit_change(True, address)
            log.info("Membership change: added %s; voters now %s.", address, self._voters())
            caught_up = await self._wait_caught_up(address)
            return self._change("added", address, caught_up)

    async def _wait_caught_up(self, address: str) -> bool:
        """Until the new member holds the whole log (bounded); a second change before that
        would count on a vote that cannot yet be given."""
        target = int(self._replicator.raw_status().get("commit_idx", 0))
        deadline = time.monotonic() + CATCH_UP_TIMEOUT
        while time.monotonic() < deadline:
            match = next(
                (m.match_index for m in self._replicator.members() if m.raft == address), None
            )
            if match is not None and match >= target:
                return True
            await asyncio.sleep(0.05)
        return False

    # ----------------------------------------------------------------- remove

    async def remove(self, member: str) -> MemberChange:
        async with self._lock:
            self._require_leader()
            address = self._resolve(member)
            remaining = [v for v in self._replicator.voters() if v != address]
            if not remaining:
                raise Conflict("The last member of a cluster cannot be removed.")
            self._require_quorum_without(address, remaining)
            if address == self._replicator.self_address:
                # The entry removing us must be appended by another leader: a node is dropped
                # from the leader's peers the moment the entry is appended, so the removed
                # node itself never hears that it committed. The caller forwards the request.
                await self._hand_over_leadership()
                return self._change(HANDED_OVER, address)
            await self._commit_change(False, address)
            log.info("Membership change: removed %s; voters now %s.", address, self._voters())
            await self._forget_published(address)
            return self._change("removed", address)

    async def _commit_change(self, add: bool, address: str) -> None:
        """Submit the change, retrying across a leader change (ours, when removing ourselves).

        A retry first checks whether the earlier attempt took effect: pysyncobj would deny
        adding a present member or removing an absent one.
        """
        deadline = time.monotonic() + self._timeout
        while True:
            if (address in self._replicator.voters()) == add:
                return
            try:
                await self._replicator.change_membership(add, address, self._timeout)
                return
            except Unavailable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    def _resolve(self, member: str) -> str:
        """A node id (as published in the member table) or a Raft address."""
        voters = self._replicator.voters()
        if member in voters:
            return member
        for published in self._replicator.state.members.values():
            if published.node_id == member and published.raft in voters:
                return published.raft
        raise NotFound(f"No cluster member '{member}' (give a node id or a Raft address).")

    def _require_quorum_without(self, address: str, remaining: list[str]) -> None:
        reachable = {self._replicator.self_address} | self._reachable_peers()
        alive = [v for v in remaining if v in reachable]
        if len(alive) * 2 <= len(remaining):
            raise Conflict(
                f"Removing {address} would leave {len(remaining)} members of which only "
                f"{len(alive)} are reachable: the cluster could not commit. Bring members back "
                "or remove an unreachable one first."
            )

    def _reachable_peers(self) -> set[str]:
        fresh = self._raft.leader_fallback
        return {
            m.raft
            for m in self._replicator.members()
            if m.connected and m.last_contact is not None and m.last_contact <= fresh
        }

    async def _forget_published(self, address: str) -> None:
        command = engine.RemoveMember(request_id=f"unmember:{uuid.uuid4().hex}", raft=address)
        try:
            await self._replicator.submit(command, self._timeout)
        except Unavailable as exc:  # the voter is gone; a stale API URL only shows in /cluster
            log.warning("Removed %s but could not drop its published address: %s", address, exc)

    # ----------------------------------------------------------------- leadership

    async def transfer_leadership(self, to: str | None) -> MemberChange:
        async with self._lock:
            self._require_leader()
            target = None if to is None else self._resolve(to)
            if target == self._replicator.self_address:
                return self._change("unchanged", target)
            await self._hand_over_leadership(target)
            return self._change("transferred", target or str(self._replicator.leader_address()))

    async def _hand_over_leadership(self, target: str | None = None) -> None:
        if target is not None and target not in self._reachable_peers():
            raise Conflict(f"{target} is not reachable from the leader; choose another member.")
        leader = await self._replicator.hand_over_leadership(target, TRANSFER_TIMEOUT)
        if leader is not None:
            log.info("Leadership transferred to %s.", leader)
            return
        raise Unavailable(
            "Leadership did not move in time (the target must be connected and caught up); retry.",
            retry_after=1,
        )

    # ----------------------------------------------------------------- helpers

    def _require_leader(self) -> None:
        if not self._replicator.is_leader():
            raise Unavailable("This node is no longer the Raft leader; retry.", retry_after=0.5)

    def _voters(self) -> str:
        return ", ".join(self._replicator.voters())

    def _change(self, action: str, raft: str, caught_up: bool | None = None) -> MemberChange:
        return MemberChange(
            action,
            raft,
            tuple(self._replicator.voters()),
            self._replicator.leader_address(),
            caught_up,
        )


async def _require_reachable(address: str) -> None:
    host, _, port = address.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]"), int(port)), REACH_TIMEOUT
        )
    except (OSError, TimeoutError) as exc:
        raise Conflict(
            f"Node {address} is not reachable ({exc or type(exc).__name__}): start it first "
            "with --peers naming the current members, then add it."
        ) from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
