"""Per-session heartbeat rate limit: a token bucket answered 429 + Retry-After when empty.

The PendingPrimary hand-over needs a few immediate heartbeats in a row (the adapter confirms at
once, spec §4.2; up to 10), so a session that is PendingPrimary may borrow up to ``burst``
tokens beyond an empty bucket: the confirmation chain always gets through, and a flood from a
pending session is still bounded.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from cfs_cluster.errors import TooManyRequests

__all__ = ["HeartbeatLimiter"]

_TRACKED = 100_000  # sessions remembered; the oldest are forgotten (a full bucket again)


@dataclass
class _Bucket:
    tokens: float
    updated: float


class HeartbeatLimiter:
    """``interval``: seconds per token (0 = off); ``burst``: bucket size."""

    def __init__(
        self, interval: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self.burst = max(1, burst)
        self._clock = clock
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    def check(self, group_id: str, session_id: str, pending: bool) -> None:
        """Take one token for this heartbeat or raise TooManyRequests."""
        if not self.enabled:
            return
        now = self._clock()
        key = (group_id, session_id)
        bucket = self._buckets.pop(key, None) or _Bucket(float(self.burst), now)
        elapsed = max(0.0, now - bucket.updated)
        bucket.tokens = min(float(self.burst), bucket.tokens + elapsed / self.interval)
        bucket.updated = now
        self._buckets[key] = bucket
        while len(self._buckets) > _TRACKED:
            self._buckets.popitem(last=False)
        floor = 1.0 - self.burst if pending else 1.0
        if bucket.tokens < floor:
            wait = (floor - bucket.tokens) * self.interval
            raise TooManyRequests(
                f"Client session '{session_id}' sends heartbeats faster than one per "
                f"{self.interval:g} s.",
                retry_after=wait,
            )
        bucket.tokens -= 1.0
