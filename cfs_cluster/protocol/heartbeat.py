"""A heartbeat as both sides of the wire see it: the report an adapter sends, the answer it gets."""

from __future__ import annotations

from dataclasses import dataclass

from cfs_cluster.protocol.wire import ClientRole

__all__ = [
    "INTERNAL_PATHS",
    "PING_PATH",
    "READ_PATH",
    "RELAY_PATH",
    "HeartbeatAnswer",
    "HeartbeatReport",
]

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


@dataclass(frozen=True)
class HeartbeatAnswer:
    role: ClientRole
    last_data_processed: int  # UTC ticks, 0 = unknown
    epoch: int
    valid_for: int  # ticks the adapter may act on a Primary grant, from when it sent
    timeout: int  # the group's FailoverTimeout in ticks
