"""A heartbeat as both sides of the wire see it: the report an adapter sends, the answer it gets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cfs_cluster.errors import BadRequest
from cfs_cluster.protocol.wire import ClientRole, parse_enum

__all__ = [
    "HELD_EPOCH",
    "HELD_ROLE",
    "INTERNAL_PATHS",
    "PING_PATH",
    "READ_PATH",
    "RELAY_PATH",
    "HeartbeatAnswer",
    "HeartbeatReport",
    "parse_held",
]

# Our agent's extension of the heartbeat body: the role it acts in when it sends, and the grant
# epoch that role refers to. "Secondary" with epoch E promises it acts on no grant of epoch <= E
# (agent/grant.py), so the service may hand the role on without waiting for the old grant to
# lapse. AVEVA adapters never send them; the service then waits for the grant's validity.
HELD_ROLE = "HeldRole"
HELD_EPOCH = "HeldEpoch"

# Where a follower posts batches of heartbeats to the leader (cluster/relay.py); public to auth,
# because the relay checks its own token.
RELAY_PATH = "/_cluster/heartbeats"
# A follower's read barrier plus the leader's live liveness (cluster/reads.py).
READ_PATH = "/_cluster/read"
# A follower's probe of whether it can reach the leader at all (its /readyz follows it).
PING_PATH = "/_cluster/ping"
# The members' internal channel: every request is member-signed (security/memberauth.py).
INTERNAL_PATHS = (RELAY_PATH, READ_PATH, PING_PATH)


@dataclass(frozen=True)
class HeartbeatReport:
    """One heartbeat as parsed from the wire."""

    group_id: str
    session_id: str
    score: float
    last_data_processed: int | None  # UTC ticks
    heartbeat_time: int | None  # UTC ticks
    held_role: ClientRole | None = None  # HeldRole: what the sender acts as (our agent only)
    held_epoch: int | None = None  # HeldEpoch: the grant epoch that role refers to


@dataclass(frozen=True)
class HeartbeatAnswer:
    role: ClientRole
    last_data_processed: int  # UTC ticks, 0 = unknown
    epoch: int
    valid_for: int  # ticks the adapter may act on a Primary grant, from when it sent
    timeout: int  # the group's FailoverTimeout in ticks


def parse_held(role: Any, epoch: Any) -> tuple[ClientRole | None, int | None]:
    """``HeldRole`` and ``HeldEpoch`` of a heartbeat body (both optional); BadRequest if malformed."""
    held_role = None if role is None else parse_enum(ClientRole, role, HELD_ROLE)
    if epoch is None:
        return held_role, None
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch < 2**63:
        raise BadRequest(
            f"{HELD_EPOCH} must be a non-negative integer.",
            parameters={HELD_EPOCH: str(epoch)[:64]},
        )
    return held_role, epoch
