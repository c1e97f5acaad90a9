"""The OpenAPI schema of the failover API's bodies (documentation only).

Requests are parsed by hand in ``cfs_cluster.api.models`` (the wire rules of spec §3 are
stricter and more lenient than a pydantic model in places); these models give /docs and
/openapi.json the shapes a client sends and receives.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from cfs_cluster.api.models import MAX_ID_LENGTH
from cfs_cluster.protocol.wire import ClientRole

__all__ = [
    "ClientSessionConfiguration",
    "GroupConfiguration",
    "Heartbeat",
    "HeartbeatResponse",
    "RoleOverrideConfiguration",
]


class GroupConfiguration(BaseModel):
    Id: str = Field(max_length=MAX_ID_LENGTH, examples=["FailoverGroup1"])
    Name: str | None = None
    Description: str | None = None
    FailoverTimeout: str = Field(
        description=".NET TimeSpan [d.]hh:mm:ss[.fffffff], 1 s to 1 day", examples=["00:01:00"]
    )
    AdditionalData: dict[str, Any] | None = None


class ClientSessionConfiguration(BaseModel):
    Id: str = Field(max_length=MAX_ID_LENGTH, examples=["host1.OpcUa1"])
    Name: str | None = None
    AdditionalData: dict[str, Any] | None = None


class Heartbeat(BaseModel):
    FailoverScore: float = Field(ge=0, le=100, description="Also accepted as legacy FailoverStatus")
    LastDataProcessedTime: str | None = Field(
        default=None, examples=["2026-11-23T10:00:00.1234567Z"]
    )
    HeartbeatTime: str | None = None
    HeldRole: ClientRole | None = Field(
        default=None,
        description="Extension (our agent): the role the sender acts in as it sends. "
        "Secondary with HeldEpoch E promises it acts on no grant of epoch <= E, so a hand-over "
        "need not wait for its old grant to lapse",
    )
    HeldEpoch: int | None = Field(default=None, ge=0, description="The epoch HeldRole refers to")


class HeartbeatResponse(BaseModel):
    Role: ClientRole = Field(description="0 Secondary, 1 Primary, 2 PendingPrimary")
    LastDataProcessedTime: str
    Epoch: int = Field(description="Grant counter of the group; fences writes of old primaries")
    ValidFor: str = Field(
        description="How long a Primary may act on this grant, from when it sent the heartbeat"
    )


class RoleOverrideConfiguration(BaseModel):
    Value: str = Field(description="Primary (1) or Off (0)", examples=["Primary"])
    ExpirationPeriod: str | None = Field(default=None, examples=["08:00:00"])
