"""``FailoverState``: what the facet reports of failover, in the seed's shape (spec §5.3, §5.7),
the .NET-compatible formatting of its scores and times, and ``Restored``: what a new agent
starts from after reading the saved ``System_FailoverState`` back."""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cfs_cluster.errors import BadRequest
from cfs_cluster.protocol.wire import (
    MIN_DATETIME_TEXT,
    ClientRole,
    format_datetime,
    parse_datetime,
    parse_enum,
    unix_from_ticks,
)

__all__ = [
    "FailoverState",
    "Restored",
    "format_score",
    "format_seed_time",
    "format_time",
    "restored_from",
]

_YEAR_ONE = dt.datetime(1, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class FailoverState:
    """What ``GET api/v1/diagnostics/FailoverState`` reports (seed 002; spec §5.2, §5.7).

    The seed's four properties come first, in its shape; the rest are ours (clients that know
    only the seed's ignore them).
    """

    role: ClientRole = ClientRole.Secondary
    last_data_processed: dt.datetime | None = None
    failover_score: float = 0.0
    # The adapter framework's REST answer always says Running; Shutdown is only ever persisted.
    adapter_state: str = "Running"
    mode: str | None = None  # configured
    applied_mode: str | None = None  # what a Secondary's components follow now (spec §5.4)
    endpoint_status: str | None = None
    last_error: str | None = None
    last_error_time: dt.datetime | None = None
    next_attempt_time: dt.datetime | None = None
    epoch: int | None = None
    grant_valid_for: float | None = None  # seconds the Primary grant has left

    def to_json(self) -> dict[str, Any]:
        return {
            "Role": self.role.name,
            "LastDataProcessedTime": format_seed_time(self.last_data_processed),
            "FailoverStatus": format_score(self.failover_score),
            "AdapterState": self.adapter_state,
            "FailoverScore": self.failover_score,
            "Mode": self.mode,
            "AppliedMode": self.applied_mode,
            "EndpointStatus": self.endpoint_status,
            "LastError": self.last_error,
            "LastErrorTime": _optional_time(self.last_error_time),
            "NextAttemptTime": _optional_time(self.next_attempt_time),
            "Epoch": self.epoch,
            "GrantValidFor": self.grant_valid_for,
        }

    def to_saved(self, adapter_state: str) -> dict[str, Any]:
        """The ``System_FailoverState`` document (spec §5.7)."""
        return {
            "Role": self.role.name,
            "LastDataProcessedTime": format_time(self.last_data_processed),
            "FailoverScore": self.failover_score,
            "AdapterState": adapter_state,
        }


def format_score(score: float) -> str:
    """The score as the adapter framework's ``FailoverStatus`` text: a .NET ``float`` written
    the shortest way that reads back the same single-precision value (95 → "95", 99.5 →
    "99.5", 1/3 → "0.33333334")."""
    single = _single(score)
    for digits in range(1, 10):
        text = f"{single:.{digits}g}"
        if _single(float(text)) == single:
            break
    value = decimal.Decimal(text)
    if value == 0 or abs(value) >= decimal.Decimal("1e-4"):
        return format(value.normalize(), "f")
    mantissa, _, exponent = f"{value:e}".partition("e")
    return f"{decimal.Decimal(mantissa).normalize()}E{exponent[0]}{exponent[1:].zfill(2)}"


def _single(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])


def format_seed_time(value: dt.datetime | None) -> str:
    """UTC as the seed writes it: ``2021-01-01T00:00:00``, a fraction only when there is one."""
    if value is None:
        return MIN_DATETIME_TEXT
    aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    utc = aware.astimezone(dt.UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{utc.microsecond:06d}".rstrip("0") if utc.microsecond else "")


def _optional_time(value: dt.datetime | None) -> str | None:
    return None if value is None else format_time(value)


def format_time(value: dt.datetime | None) -> str:
    """ISO 8601 in UTC as .NET writes it; unknown is DateTime.MinValue, never null (spec §3.4)."""
    if value is None:
        return MIN_DATETIME_TEXT
    aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    return format_datetime((aware - _YEAR_ONE) // _MICROSECOND * 10)


@dataclass(frozen=True)
class Restored:
    """What a new agent starts from (spec §5.7) and whom it tells about changes."""

    role: ClientRole = ClientRole.Secondary
    last_data_processed: dt.datetime | None = None
    on_change: Callable[[], None] | None = None


def restored_from(saved: dict[str, Any] | None) -> Restored:
    """Spec §5.7: after an ungraceful stop (the saved AdapterState is Running) or with nothing
    saved, start as Secondary; after a graceful stop restore the saved role. The saved
    LastDataProcessedTime is kept either way. Anything unreadable counts as not saved."""
    if not saved:
        return Restored()
    ldpt: dt.datetime | None = None
    try:
        ticks = parse_datetime(saved.get("LastDataProcessedTime"), "LastDataProcessedTime")
        if ticks > 0:
            ldpt = dt.datetime.fromtimestamp(unix_from_ticks(ticks), dt.UTC)
    except (BadRequest, TypeError):
        pass
    role = ClientRole.Secondary
    if saved.get("AdapterState") == "Shutdown":
        with contextlib.suppress(BadRequest):
            role = parse_enum(ClientRole, saved.get("Role"), "Role")
    if role == ClientRole.PendingPrimary:
        role = ClientRole.Secondary
    return Restored(role, ldpt)
