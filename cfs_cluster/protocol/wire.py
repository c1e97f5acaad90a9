"""Wire formats of the CFS protocol, parsed and written exactly as .NET does.

Times travel as .NET values, so we keep them as integer *ticks* (100 ns) internally and never
lose the seventh fractional digit:

- TimeSpan: ``[-][d.]hh:mm:ss[.fffffff]`` (the "c" format).
- DateTime: ISO 8601 with up to 7 fractional digits, with ``Z``, an offset, or nothing (UTC is
  assumed); ``0001-01-01T00:00:00`` (DateTime.MinValue) is tick 0 and is written without ``Z``.
- Property names: any casing in requests (``normalize_keys``); PascalCase in responses.
- Enums: a name (any casing) or its number.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Mapping
from enum import IntEnum
from typing import Any, TypeVar

from cfs_cluster.errors import BadRequest

__all__ = [
    "MAX_TICKS",
    "MIN_DATETIME_TEXT",
    "TICKS_PER_SECOND",
    "ClientRole",
    "RoleOverride",
    "format_datetime",
    "format_timespan",
    "normalize_keys",
    "parse_datetime",
    "parse_enum",
    "parse_timespan",
    "ticks_from_unix",
    "unix_from_ticks",
]

TICKS_PER_SECOND = 10_000_000
_TICKS_PER_DAY = 86_400 * TICKS_PER_SECOND
# Ticks from 0001-01-01T00:00:00 to 1970-01-01T00:00:00 (the Unix epoch).
_UNIX_EPOCH_TICKS = 621_355_968_000_000_000
MAX_TICKS = 3_155_378_975_999_999_999  # 9999-12-31T23:59:59.9999999
# TimeSpan.MaxValue / MinValue in ticks (a .NET TimeSpan is a signed 64-bit tick count).
_MAX_TIMESPAN_TICKS = 2**63 - 1
_MIN_TIMESPAN_TICKS = -(2**63)
MIN_DATETIME_TEXT = "0001-01-01T00:00:00"


class ClientRole(IntEnum):
    """Role of a client session (spec §3.3)."""

    Secondary = 0
    Primary = 1
    PendingPrimary = 2


class RoleOverride(IntEnum):
    """Role override value (spec §3.3); ``Secondary`` is deliberately absent."""

    Off = 0
    Primary = 1


_TIMESPAN = re.compile(
    r"^\s*(?P<sign>-)?(?:(?P<days>\d{1,8})\.)?(?P<h>\d{1,2}):(?P<m>\d{1,2})"
    r"(?::(?P<s>\d{1,2})(?:\.(?P<frac>\d{1,7}))?)?\s*$",
    # ASCII digits only: without re.ASCII, \d also matches e.g. Arabic-Indic or full-width
    # digits, which int() accepts, so "٠٠:٠١:٠٠" would parse as one minute.
    re.ASCII,
)
_DATETIME = re.compile(
    r"^\s*(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})[Tt ](?P<h>\d{2}):(?P<mi>\d{2})"
    r"(?::(?P<s>\d{2})(?:\.(?P<frac>\d{1,7}))?)?"
    r"(?P<tz>[Zz]|[+-]\d{2}:?\d{2})?\s*$",
    re.ASCII,  # ASCII digits only (see _TIMESPAN)
)
_INTEGER = re.compile(r"-?[0-9]{1,18}")  # bounded: int() refuses over 4300 digits


def parse_timespan(value: object, field: str) -> int:
    """Parse a .NET TimeSpan (or a number of seconds) into ticks; raise BadRequest naming ``field``."""
    if isinstance(value, bool) or value is None:
        raise BadRequest(
            f'{field} must be a TimeSpan such as "00:01:00".', parameters={field: str(value)}
        )
    if isinstance(value, int | float):
        # The range test comes first: math.isfinite() raises OverflowError (not BadRequest)
        # for an int too large for a float, such as a JSON number of 400 digits.
        if abs(value) > 10_675_199 * 86_400 or not math.isfinite(value):
            raise BadRequest(f"{field} is out of range.", parameters={field: str(value)})
        return round(value * TICKS_PER_SECOND)
    if not isinstance(value, str):
        raise BadRequest(
            f"{field} must be a TimeSpan string.", parameters={field: repr(value)[:64]}
        )
    match = _TIMESPAN.match(value)
    if match is None:
        raise BadRequest(
            f"{field} '{value[:64]}' is not a TimeSpan of the form [d.]hh:mm:ss[.fffffff].",
            parameters={field: value[:64]},
        )
    hours, minutes = int(match["h"]), int(match["m"])
    seconds = int(match["s"] or 0)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise BadRequest(f"{field} '{value}' has a field out of range.", parameters={field: value})
    frac = (match["frac"] or "").ljust(7, "0")
    ticks = (
        int(match["days"] or 0) * _TICKS_PER_DAY
        + ((hours * 60 + minutes) * 60 + seconds) * TICKS_PER_SECOND
        + int(frac or 0)
    )
    ticks = -ticks if match["sign"] else ticks
    # The text form has TimeSpan's range too (e.g. "99999999.00:00:00" is refused), as the
    # numeric form has and as .NET refuses it with an OverflowException.
    if not _MIN_TIMESPAN_TICKS <= ticks <= _MAX_TIMESPAN_TICKS:
        raise BadRequest(f"{field} '{value}' is out of range.", parameters={field: value})
    return ticks


def format_timespan(ticks: int) -> str:
    """Write ticks in the .NET TimeSpan "c" format: ``[-][d.]hh:mm:ss[.fffffff]``."""
    sign = "-" if ticks < 0 else ""
    ticks = abs(ticks)
    days, rest = divmod(ticks, _TICKS_PER_DAY)
    seconds, frac = divmod(rest, TICKS_PER_SECOND)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    text = f"{sign}{days}." if days else sign
    text += f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    return text + (f".{frac:07d}" if frac else "")


def parse_datetime(value: object, field: str) -> int:
    """Parse an ISO 8601 date-time (up to 7 fractional digits) into UTC ticks since 0001-01-01."""
    if not isinstance(value, str):
        raise BadRequest(
            f"{field} must be an ISO 8601 date-time string.", parameters={field: repr(value)[:64]}
        )
    match = _DATETIME.match(value)
    if match is None:
        raise BadRequest(
            f"{field} '{value[:64]}' is not an ISO 8601 date-time.", parameters={field: value[:64]}
        )
    try:
        day = _dt.date(int(match["y"]), int(match["mo"]), int(match["d"]))
    except ValueError as exc:
        raise BadRequest(
            f"{field} '{value}' is not a valid date.", parameters={field: value}
        ) from exc
    hours, minutes, seconds = int(match["h"]), int(match["mi"]), int(match["s"] or 0)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise BadRequest(
            f"{field} '{value}' has a time field out of range.", parameters={field: value}
        )
    ticks = (day.toordinal() - 1) * _TICKS_PER_DAY
    ticks += ((hours * 60 + minutes) * 60 + seconds) * TICKS_PER_SECOND
    ticks += int((match["frac"] or "").ljust(7, "0") or 0)
    tz = match["tz"]
    if tz and tz not in ("Z", "z"):
        offset_hours, offset_mins = int(tz[1:3]), int(tz[-2:])
        # An offset such as "+00:99" or "+99:00" would silently shift the time: refuse it.
        if offset_hours > 23 or offset_mins > 59:
            raise BadRequest(
                f"{field} '{value}' has an offset out of range.", parameters={field: value}
            )
        offset_minutes = offset_hours * 60 + offset_mins
        ticks -= (1 if tz[0] == "+" else -1) * offset_minutes * 60 * TICKS_PER_SECOND
    if not 0 <= ticks <= MAX_TICKS:
        raise BadRequest(f"{field} '{value}' is out of range.", parameters={field: value})
    return ticks


def format_datetime(ticks: int) -> str:
    """Write UTC ticks as .NET does: 7 fractional digits and ``Z``; tick 0 as the MinValue text."""
    if ticks <= 0:
        return MIN_DATETIME_TEXT
    days, rest = divmod(ticks, _TICKS_PER_DAY)
    seconds, frac = divmod(rest, TICKS_PER_SECOND)
    day = _dt.date.fromordinal(days + 1)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return f"{day.isoformat()}T{hours:02d}:{minutes:02d}:{seconds:02d}.{frac:07d}Z"


def ticks_from_unix(seconds: float) -> int:
    """Convert a Unix timestamp (``time.time()``) into UTC ticks."""
    return _UNIX_EPOCH_TICKS + round(seconds * TICKS_PER_SECOND)


def unix_from_ticks(ticks: int) -> float:
    """Convert UTC ticks into a Unix timestamp."""
    return (ticks - _UNIX_EPOCH_TICKS) / TICKS_PER_SECOND


E = TypeVar("E", bound=IntEnum)


def parse_enum(enum: type[E], value: object, field: str) -> E:
    """Accept an enum by name (any casing) or by number; raise BadRequest naming ``field``."""
    if isinstance(value, str):
        text = value.strip()
        for member in enum:
            if member.name.lower() == text.lower():
                return member
        # A strict pattern, not str.isdigit(): that is true for "--1" (after lstrip) and "²",
        # which int() refuses with ValueError (a 500 instead of a 400).
        if _INTEGER.fullmatch(text):
            value = int(text)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return enum(value)
        except ValueError:
            pass
    allowed = ", ".join(f"{m.name} ({m.value})" for m in enum)
    raise BadRequest(
        f"{field} '{str(value)[:64]}' is not one of: {allowed}.",
        parameters={field: str(value)[:64]},
    )


def normalize_keys(body: Mapping[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    """Map request properties of any casing onto the canonical names in ``known``.

    Unknown properties are ignored, as .NET's serializer does. A property given twice in
    different casings is refused, because which one wins would be a guess.
    """
    lookup = {name.lower(): name for name in known}
    result: dict[str, Any] = {}
    for key, value in body.items():
        canonical = lookup.get(key.lower())
        if canonical is None:
            continue
        if canonical in result:
            raise BadRequest(f"Property {canonical} is given more than once.")
        result[canonical] = value
    return result
