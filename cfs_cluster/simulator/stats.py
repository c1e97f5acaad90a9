"""Pure figures of a run: continuity from the sink's counts, takeovers from the role changes."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cfs_cluster.agent import ClientRole
from cfs_cluster.simulator.adapters import AdapterRoleChange


@dataclass(frozen=True)
class Continuity:
    """What reached the sink out of ``produced`` values numbered 0 … produced-1."""

    produced: int
    delivered: int
    gaps: int
    duplicates: int
    missing: tuple[int, ...]


def continuity(produced: int, counts: Mapping[int, int]) -> Continuity:
    """Gaps = sequence numbers never delivered; duplicates = deliveries beyond the first."""
    missing = tuple(seq for seq in range(produced) if counts.get(seq, 0) == 0)
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    delivered = sum(1 for seq in range(produced) if counts.get(seq, 0) > 0)
    return Continuity(produced, delivered, len(missing), duplicates, missing)


def spread(values: Sequence[float]) -> dict[str, float | None]:
    """Median and maximum, rounded to milliseconds (None when there are no values)."""
    if not values:
        return {"median": None, "max": None}
    median, top = float(statistics.median(values)), float(max(values))
    return {"median": round(median, 3), "max": round(top, 3)}


@dataclass(frozen=True)
class Takeovers:
    """What one group's role changes during the data say."""

    failovers: int  # the Primary role moved to another adapter
    demotions: int  # a live primary lost the role (grant lapse, answered Secondary)
    takeover_seconds: float | None  # crash to another adapter's Primary grant


def takeovers(
    events: Sequence[AdapterRoleChange],
    primary_at_start: str | None,
    crashed: str | None = None,
    crashed_at: float | None = None,
) -> Takeovers:
    """Count failovers and demotions in ``events`` (live adapters' role changes, any order).

    A crash records no event: the crashed adapter just stops. A promotion of the adapter that
    already held the role (after a lapse) is a demotion and a re-grant, not a failover.
    """
    holder, failovers, demotions = primary_at_start, 0, 0
    takeover: float | None = None
    for event in sorted(events, key=lambda e: e.at):
        if event.new == ClientRole.Primary:
            if holder is not None and event.adapter != holder:
                failovers += 1
            holder = event.adapter
            first = takeover is None and event.adapter != crashed
            if first and crashed_at is not None and event.at >= crashed_at:
                takeover = round(event.at - crashed_at, 3)
        elif event.old == ClientRole.Primary:
            demotions += 1
    return Takeovers(failovers, demotions, takeover)
