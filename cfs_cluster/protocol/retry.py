"""The one reading of an HTTP ``Retry-After`` header (RFC 9110 §10.2.3), for every client here:
the agent's endpoint calls and the OMF sender alike."""

from __future__ import annotations

import email.utils
import math
import time

__all__ = ["retry_after_seconds"]


def retry_after_seconds(value: str | None, longest: float = math.inf) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or an HTTP date), at most
    ``longest``; None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if math.isnan(seconds):
        return None
    return min(longest, max(0.0, seconds))
