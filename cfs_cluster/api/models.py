"""Wire models: request bodies in (any casing, enums by name or number), response bodies out.

Parsing is hand-written rather than pydantic-validated because .NET clients send property names
in any casing and enums as names or numbers; every failure is a BadRequest naming the field.
The pydantic classes at the bottom only document the schema in OpenAPI.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from cfs_cluster import engine
from cfs_cluster.cluster.liveness import GroupLiveness
from cfs_cluster.errors import BadRequest
from cfs_cluster.protocol.bodies import load_json
from cfs_cluster.protocol.heartbeat import (
    HELD_EPOCH,
    HELD_ROLE,
    HeartbeatAnswer,
    HeartbeatReport,
    parse_held,
)
from cfs_cluster.protocol.wire import (
    MAX_TICKS,
    TICKS_PER_SECOND,
    ClientRole,
    RoleOverride,
    format_datetime,
    format_timespan,
    normalize_keys,
    parse_datetime,
    parse_enum,
    parse_timespan,
)

__all__ = [
    "GroupConfig",
    "HeartbeatBody",
    "OverrideBody",
    "SessionConfig",
    "check_id",
    "load_json",
    "relayed_batch",
    "relayed_report",
]

MAX_ID_LENGTH = 256
MAX_TEXT_LENGTH = 1024
MIN_TIMEOUT = 1 * TICKS_PER_SECOND
MAX_TIMEOUT = 86_400 * TICKS_PER_SECOND


# --------------------------------------------------------------------------- parsing


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"The request body must be a JSON object ({what}).")
    return value


def check_id(value: Any, field: str) -> str:
    """Ids are 1-256 printable characters (spec §2; issue limits)."""
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(
            f"{field} is required and must be a non-empty string.",
            parameters={field: str(value)[:64]},
        )
    if len(value) > MAX_ID_LENGTH:
        raise BadRequest(f"{field} is longer than {MAX_ID_LENGTH} characters.")
    if not value.isprintable() or "/" in value:
        raise BadRequest(f"{field} must contain only printable characters and no '/'.")
    return value


def _optional_text(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{field} must be a string or null.")
    if len(value) > MAX_TEXT_LENGTH:
        raise BadRequest(f"{field} is longer than {MAX_TEXT_LENGTH} characters.")
    return value


def _additional_data(value: Any) -> Any:
    if value is not None and not isinstance(value, dict):
        raise BadRequest("AdditionalData must be a JSON object or null.")
    if value is not None and len(json.dumps(value)) > 64 * 1024:
        raise BadRequest("AdditionalData is larger than 64 KiB.")
    return value


@dataclass(frozen=True)
class GroupConfig:
    id: str
    name: str | None
    description: str | None
    timeout: int
    additional_data: Any

    @classmethod
    def parse(cls, body: Any) -> GroupConfig:
        fields = normalize_keys(
            _object(body, "GroupConfiguration"),
            ("Id", "Name", "Description", "FailoverTimeout", "AdditionalData"),
        )
        if fields.get("FailoverTimeout") is None:
            raise BadRequest('FailoverTimeout is required, e.g. "00:01:00".')
        timeout = parse_timespan(fields["FailoverTimeout"], "FailoverTimeout")
        if not MIN_TIMEOUT <= timeout <= MAX_TIMEOUT:
            raise BadRequest(
                f"The failover timeout {format_timespan(timeout)} is outside the allowed range "
                "00:00:01 to 1.00:00:00.",
                parameters={"FailoverTimeout": format_timespan(timeout)},
            )
        return cls(
            id=check_id(fields.get("Id"), "Id"),
            name=_optional_text(fields.get("Name"), "Name"),
            description=_optional_text(fields.get("Description"), "Description"),
            timeout=timeout,
            additional_data=_additional_data(fields.get("AdditionalData")),
        )


@dataclass(frozen=True)
class SessionConfig:
    id: str
    name: str | None
    additional_data: Any

    @classmethod
    def parse(cls, body: Any) -> SessionConfig:
        fields = normalize_keys(
            _object(body, "ClientSessionConfiguration"), ("Id", "Name", "AdditionalData")
        )
        return cls(
            id=check_id(fields.get("Id"), "Id"),
            name=_optional_text(fields.get("Name"), "Name"),
            additional_data=_additional_data(fields.get("AdditionalData")),
        )


@dataclass(frozen=True)
class HeartbeatBody:
    score: float
    last_data_processed: int | None
    heartbeat_time: int | None
    held_role: ClientRole | None = None
    held_epoch: int | None = None

    @classmethod
    def parse(cls, body: Any) -> HeartbeatBody:
        fields = normalize_keys(
            _object(body, "heartbeat"),
            (
                "FailoverScore",
                "FailoverStatus",
                "LastDataProcessedTime",
                "HeartbeatTime",
                HELD_ROLE,
                HELD_EPOCH,
            ),
        )
        raw = fields.get("FailoverScore", fields.get("FailoverStatus"))
        if raw is None:
            raise BadRequest("FailoverScore is required (a number from 0 to 100).")
        score = _score(raw)
        ldpt = fields.get("LastDataProcessedTime")
        hb_time = fields.get("HeartbeatTime")
        held_role, held_epoch = parse_held(fields.get(HELD_ROLE), fields.get(HELD_EPOCH))
        return cls(
            score=score,
            last_data_processed=None
            if ldpt is None
            else parse_datetime(ldpt, "LastDataProcessedTime"),
            heartbeat_time=None if hb_time is None else parse_datetime(hb_time, "HeartbeatTime"),
            held_role=held_role,
            held_epoch=held_epoch,
        )


def relayed_report(item: Any) -> HeartbeatReport:
    """A heartbeat a follower relayed (``[groupId, sessionId, score, ldpt, time, heldRole,
    heldEpoch]``, times in ticks; five items from a node of an earlier release, which knows no
    HeldRole/HeldEpoch), held to the checks of a direct one: a relay carries nothing the front
    door of the leader would have refused."""
    if not isinstance(item, list) or len(item) not in (5, 7):
        raise BadRequest(
            "A relayed heartbeat is [groupId, sessionId, score, ldpt, time, heldRole, heldEpoch]."
        )
    group_id, session_id, score, ldpt, hb_time, *held = item
    held_role, held_epoch = parse_held(*held) if held else (None, None)
    return HeartbeatReport(
        check_id(group_id, "groupId"),
        check_id(session_id, "sessionId"),
        _score(score),
        _relayed_ticks(ldpt, "LastDataProcessedTime"),
        _relayed_ticks(hb_time, "HeartbeatTime"),
        held_role,
        held_epoch,
    )


def relayed_batch(body: Any) -> tuple[int | None, list[Any]]:
    """The relaying follower's Raft term and its heartbeats: ``{"Term": t, "Heartbeats": [...]}``
    (the term inside the signed body, so no one on the way changes it), or a bare list from a
    node of an earlier release, which sends no term."""
    if isinstance(body, list):
        return None, body
    if not isinstance(body, dict):
        raise BadRequest("A relayed batch is {Term, Heartbeats}.")
    term, items = body.get("Term"), body.get("Heartbeats")
    if isinstance(term, bool) or not isinstance(term, int) or term < 0:
        raise BadRequest("Term of a relayed batch must be a non-negative integer.")
    if not isinstance(items, list):
        raise BadRequest("Heartbeats of a relayed batch must be a list.")
    return term, items


def _relayed_ticks(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TICKS:
        raise BadRequest(f"{field} of a relayed heartbeat must be ticks or null.")
    return value


def _score(raw: Any) -> float:
    if isinstance(raw, str):
        try:
            raw = float(raw)
        except ValueError:
            raw = None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise BadRequest("FailoverScore must be a number from 0 to 100.")
    # Only floats go through math.isfinite(): it and the :g format convert to float, which
    # raises OverflowError (a 500) for a JSON integer of e.g. 400 digits; ints compare exactly.
    if isinstance(raw, float) and not math.isfinite(raw):
        raise BadRequest("FailoverScore must be a number from 0 to 100.")
    if not 0 <= raw <= 100:
        shown = str(raw)[:24] if isinstance(raw, int) else f"{raw:g}"
        raise BadRequest(
            f"FailoverScore {shown} is outside 0 to 100.", parameters={"FailoverScore": shown}
        )
    return float(raw)


@dataclass(frozen=True)
class OverrideBody:
    value: RoleOverride
    period: int | None

    @classmethod
    def parse(cls, body: Any) -> OverrideBody:
        fields = normalize_keys(
            _object(body, "RoleOverrideConfiguration"), ("Value", "ExpirationPeriod")
        )
        raw = fields.get("Value")
        if raw is None:
            raise BadRequest("Value is required: Primary or Off.")
        if isinstance(raw, str) and raw.strip().lower() == "secondary":
            raise BadRequest(
                "Value 'Secondary' is not supported; use Primary to force a session, Off to cancel.",
                parameters={"Value": raw},
            )
        value = parse_enum(RoleOverride, raw, "Value")
        period = fields.get("ExpirationPeriod")
        ticks = None
        if period is not None and value == RoleOverride.Primary:
            ticks = parse_timespan(period, "ExpirationPeriod")
            if ticks <= 0:
                raise BadRequest("ExpirationPeriod must be positive, or null for no expiry.")
        return cls(value, ticks)


# --------------------------------------------------------------------------- rendering


def group_json(group: engine.Group) -> dict[str, Any]:
    return {
        "Id": group.id,
        "Name": group.name,
        "Description": group.description,
        "FailoverTimeout": format_timespan(group.timeout),
        "AdditionalData": group.additional_data,
    }


def session_json(
    group: engine.Group, session: engine.Session, live: GroupLiveness | None = None
) -> dict[str, Any]:
    """``live``: the deciding leader's liveness; without it, the last checkpoint's."""
    hb = session.heartbeat if live is None else live.heartbeats.get(session.id, session.heartbeat)
    return {
        "Id": session.id,
        "Name": session.name,
        "Heartbeat": None
        if hb is None
        else {
            "FailoverScore": hb.score,
            "LastDataProcessedTime": format_datetime(hb.last_data_processed)
            if hb.last_data_processed
            else None,
            "HeartbeatTime": format_datetime(hb.heartbeat_time),
        },
        "Role": int(engine.role_of(group, session.id)),
        "HeartbeatPosted": hb is not None,
        "RoleOverride": int(session.override),
        "RoleOverrideExpirationTime": None
        if session.override_expiry is None
        else format_datetime(session.override_expiry),
        "AdditionalData": session.additional_data,
    }


def status_json(group: engine.Group, live: GroupLiveness | None = None) -> dict[str, Any]:
    ldpt = max(group.last_data_processed, live.last_data_processed if live else 0)
    return {
        "Primary": group.primary,
        "PendingPrimary": group.pending,
        "LastDataProcessedTime": format_datetime(ldpt) if ldpt else None,
        "Epoch": group.epoch,
    }


def heartbeat_json(answer: HeartbeatAnswer) -> dict[str, Any]:
    """Never a null Role or time toward adapters (spec §3.4, §10)."""
    return {
        "Role": int(answer.role),
        "LastDataProcessedTime": format_datetime(answer.last_data_processed),
        "Epoch": answer.epoch,
        "ValidFor": format_timespan(answer.valid_for),
    }


def heartbeat_payload(answer: HeartbeatAnswer) -> bytes:
    """``heartbeat_json`` serialized, byte for byte what ``json.dumps`` makes of it, without
    the encoder's per-call cost on the busiest path (the two strings are .NET-formatted times:
    digits, '-', ':', '.', 'T' only, nothing to escape)."""
    return b'{"Role": %d, "LastDataProcessedTime": "%s", "Epoch": %d, "ValidFor": "%s"}' % (
        int(answer.role),
        format_datetime(answer.last_data_processed).encode(),
        answer.epoch,
        format_timespan(answer.valid_for).encode(),
    )


def override_json(value: RoleOverride, expiry: int | None) -> dict[str, Any]:
    return {
        "Value": int(value),
        "RoleOverrideExpirationTime": None if expiry is None else format_datetime(expiry),
    }
