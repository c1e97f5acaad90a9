"""Hot-mode failover buffer (spec §4.2, §5.5): pure, no I/O, no clock.

A hot secondary collects the same data as the primary but does not send it. Every item is
stamped with its local processing time and kept until the group's LastDataProcessedTime (the
primary's progress, returned in every heartbeat answer) shows the primary has sent it. Items are
trimmed only up to ``LDPT - margin`` (the adapter framework uses FailoverTimeout/2), so clock
differences between the two adapters and a primary that has sent more than it has reported cost
duplicates, never gaps. On promotion the new primary flushes what is left.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["HotBuffer"]

T = TypeVar("T")


class HotBuffer(Generic[T]):
    """Items in processing-time order; times are any monotone float (e.g. Unix seconds)."""

    def __init__(self, margin: float, max_items: int | None = None) -> None:
        if margin < 0:
            raise ValueError("margin must not be negative.")
        self.margin = margin
        self._items: deque[tuple[float, T]] = deque(maxlen=max_items)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[tuple[float, T]]:
        return iter(self._items)

    def add(self, processed_at: float, item: T) -> None:
        """Keep ``item``; when full, the oldest item is dropped (a bounded buffer loses the past)."""
        self._items.append((processed_at, item))

    def trim(self, last_data_processed: float | None) -> int:
        """Drop every item stamped at or before ``last_data_processed - margin``; return how many.

        None (or a non-positive time: the server's "unknown") trims nothing.
        """
        if last_data_processed is None or last_data_processed <= 0:
            return 0
        horizon = last_data_processed - self.margin
        dropped = 0
        while self._items and self._items[0][0] <= horizon:
            self._items.popleft()
            dropped += 1
        return dropped

    def promote(self, last_data_processed: float | None) -> list[tuple[float, T]]:
        """On promotion: trim with the latest known LDPT, then hand over (and forget) the rest."""
        self.trim(last_data_processed)
        flushed = list(self._items)
        self._items.clear()
        return flushed
