"""The agent's view of its role, as pure functions and values (no I/O, time as an argument).

P1 from the adapter's side (design.md): a Primary answer is a *grant* valid for ``ValidFor``
measured on the adapter's own monotonic clock from when it **sent** the heartbeat, because the
server started counting no earlier than it received it. When the grant lapses without renewal
the agent stops acting as Primary, whatever it last heard, so two adapters never both act as
primary even when one is cut off from every node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cfs_cluster.errors import BadRequest
from cfs_cluster.protocol.wire import (
    TICKS_PER_SECOND,
    ClientRole,
    parse_datetime,
    parse_enum,
    parse_timespan,
)

__all__ = ["Grant", "RoleAnswer", "RoleChange", "next_role", "parse_role_answer"]


@dataclass(frozen=True)
class RoleChange:
    """The agent's local role changed (``reason`` says why, for logs and tests)."""

    old: ClientRole
    new: ClientRole
    epoch: int | None
    reason: str


@dataclass(frozen=True)
class RoleAnswer:
    """A heartbeat (or role long-poll) answer, parsed leniently as the adapter does (spec §3.4)."""

    role: ClientRole
    last_data_processed: int  # UTC ticks; 0 = unknown
    epoch: int | None  # our extension; None from a service that does not send it
    valid_for: float | None  # seconds; None from a service that does not send it


def parse_role_answer(body: Any) -> RoleAnswer:
    """Parse ``{"Role", "LastDataProcessedTime", "Epoch", "ValidFor"}`` in any property casing.

    Raises ValueError when the body is not an object with a Role.
    """
    if not isinstance(body, dict):
        raise ValueError("the answer is not a JSON object")
    fields = {str(k).lower(): v for k, v in body.items()}
    try:
        role = parse_enum(ClientRole, fields.get("role"), "Role")
        ldpt_text = fields.get("lastdataprocessedtime")
        ldpt = parse_datetime(ldpt_text, "LastDataProcessedTime") if ldpt_text else 0
        valid = fields.get("validfor")
        valid_for = None if valid is None else parse_timespan(valid, "ValidFor") / TICKS_PER_SECOND
    except BadRequest as exc:
        raise ValueError(exc.reason) from exc
    epoch = fields.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool):
        epoch = None
    return RoleAnswer(role, ldpt, epoch, valid_for)


@dataclass(frozen=True)
class Grant:
    """The last Primary grant: its epoch and until when (monotonic seconds) it may be acted on."""

    epoch: int | None = None
    valid_until: float = -math.inf

    @staticmethod
    def from_answer(answer: RoleAnswer, sent_at: float, default_validity: float) -> Grant:
        """The grant an answer gives; an answer without ``ValidFor`` is trusted for
        ``default_validity`` (the group's FailoverTimeout), as a plain CFS implies."""
        if answer.role != ClientRole.Primary:
            return Grant(answer.epoch)
        validity = default_validity if answer.valid_for is None else answer.valid_for
        return Grant(answer.epoch, sent_at + validity)

    def valid(self, now: float) -> bool:
        return now < self.valid_until

    def dropped(self, dropped_epoch: int) -> bool:
        """True when this grant's epoch is one the agent already dropped: a late or stale
        answer (an epoch only grows with each new grant), never acted on again."""
        return self.epoch is not None and self.epoch <= dropped_epoch

    def remaining(self, now: float) -> float:
        return max(0.0, self.valid_until - now)


def next_role(current: ClientRole, answer: ClientRole, grant_valid: bool) -> ClientRole:
    """The local role after an answer (spec §4.2; AF FailoverEndpointManager).

    PendingPrimary does not change the local role (the agent confirms at once instead), except
    that it is never Primary: a pending session does not hold the grant. A Primary answer that
    arrives after its own validity lapsed is not acted on.
    """
    if answer == ClientRole.Primary:
        return ClientRole.Primary if grant_valid else ClientRole.Secondary
    if answer == ClientRole.Secondary:
        return ClientRole.Secondary
    return ClientRole.Secondary if current == ClientRole.Primary else current
