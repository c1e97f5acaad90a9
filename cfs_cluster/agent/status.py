"""What the agent reports of itself: its state, and the health of its failover endpoint
(FailoverState and the failover health OMF of the facet read these)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from cfs_cluster.agent.transport import (
    EndpointError,
    EndpointNotFound,
    EndpointUnavailable,
    RateLimited,
    Unreachable,
)

__all__ = ["AgentState", "EndpointHealth", "EndpointStatus", "endpoint_status"]


class AgentState(StrEnum):
    """Where the agent is: as the adapter framework reports it (a StrEnum, so it reads as text)."""

    Stopped = "Stopped"
    Starting = "Starting"
    Running = "Running"
    Error = "Error"  # the last round failed; retried after the delay the failure asks for


class EndpointStatus(StrEnum):
    """What the failover endpoint last did with this agent's requests (FailoverState, health)."""

    NotConnected = "NotConnected"  # nothing answered yet
    Connected = "Connected"  # the last heartbeat was answered
    Unreachable = "Unreachable"  # no connection (refused, reset, timed out)
    CredentialsRefused = "CredentialsRefused"  # 401 or 403
    GroupNotFound = "GroupNotFound"  # 404 although the agent has just registered
    Unavailable = "Unavailable"  # 503: no leader yet
    RateLimited = "RateLimited"  # 429
    Refused = "Refused"  # any other refusal (400, 409, 5xx, an unreadable answer)


@dataclass(frozen=True)
class EndpointHealth:
    """The endpoint's state, the last error (with its UTC time) and when the next round is due."""

    status: EndpointStatus = EndpointStatus.NotConnected
    last_error: str | None = None
    last_error_time: dt.datetime | None = None
    next_attempt_time: dt.datetime | None = None


def endpoint_status(exc: EndpointError) -> EndpointStatus:
    """The status a failed round leaves the endpoint in."""
    if isinstance(exc, Unreachable):
        return EndpointStatus.Unreachable
    if isinstance(exc, EndpointUnavailable):
        return EndpointStatus.Unavailable
    if isinstance(exc, RateLimited):
        return EndpointStatus.RateLimited
    if isinstance(exc, EndpointNotFound):
        return EndpointStatus.GroupNotFound
    if exc.status in (401, 403):
        return EndpointStatus.CredentialsRefused
    return EndpointStatus.Refused
