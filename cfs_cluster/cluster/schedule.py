"""When the leader must look at a group again without a heartbeat: one deadline per group, the
earliest wins (a heap with lazy deletion of superseded entries)."""

from __future__ import annotations

import heapq
from collections.abc import Iterator

__all__ = ["SweepSchedule"]


class SweepSchedule:
    def __init__(self) -> None:
        self._deadlines: list[tuple[float, str]] = []
        self._scheduled: dict[str, float] = {}

    def __contains__(self, group_id: str) -> bool:
        return group_id in self._scheduled

    def clear(self) -> None:
        self._deadlines.clear()
        self._scheduled.clear()

    def schedule(self, group_id: str, when: float) -> None:
        """Look at the group at ``when``, unless it is already due earlier."""
        current = self._scheduled.get(group_id)
        if current is not None and current <= when:
            return
        self._scheduled[group_id] = when
        heapq.heappush(self._deadlines, (when, group_id))

    def due(self, now: float) -> Iterator[str]:
        """The groups due by ``now``, each once, earliest first; each leaves the schedule as
        it is yielded (the sweep schedules it anew)."""
        while self._deadlines and self._deadlines[0][0] <= now:
            when, group_id = heapq.heappop(self._deadlines)
            if self._scheduled.get(group_id) != when:
                continue  # superseded by an earlier deadline, already handled
            del self._scheduled[group_id]
            yield group_id
