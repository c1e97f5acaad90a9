"""What the leader heard that a new leader needs: the latest heartbeat record of every session
and the primary's last data time of every group, and which of them the next ``SaveCheckpoint``
must replicate (only what changed what a new leader decides from: design.md P2)."""

from __future__ import annotations

from cfs_cluster import engine

__all__ = ["MAX_CHECKPOINT_RECORDS", "CheckpointBuffer", "Key", "checkpoint_due"]

Key = tuple[str, str]
# Records in one SaveCheckpoint at most: its pickling, encryption and apply stop every node for
# a moment (~7 ms per 1,000 records here), and the refreshes of 20,000 live sessions at
# T = 15 s need ~2,700 per 2 s checkpoint.
MAX_CHECKPOINT_RECORDS = 4_000

Records = tuple[tuple[str, str, engine.HeartbeatRecord], ...]
GroupTimes = tuple[tuple[str, int], ...]


def checkpoint_due(
    record: engine.HeartbeatRecord, saved: engine.HeartbeatRecord | None, timeout: int
) -> bool:
    """Whether a session's latest heartbeat must go into the next checkpoint.

    A new leader needs from it what decides roles (design.md P2): the score, and that the
    session was heard recently. So: a session never checkpointed, a changed score, or a
    checkpointed record a FailoverTimeout old (``timeout`` in ticks; the new leader's horizon
    allows for that age). A heartbeat that only renews liveness costs nothing in between.
    """
    return (
        saved is None
        or saved.score != record.score
        or record.received_at - saved.received_at >= timeout
    )


class CheckpointBuffer:
    """The leader's latest records and group times, and the ones not replicated yet."""

    def __init__(self) -> None:
        self._records: dict[Key, engine.HeartbeatRecord] = {}
        self._dirty_records: set[Key] = set()
        self._group_times: dict[str, int] = {}
        self._dirty_groups: set[str] = set()

    def clear(self) -> None:
        self._records.clear()
        self._dirty_records.clear()
        self._group_times.clear()
        self._dirty_groups.clear()

    def record(self, key: Key) -> engine.HeartbeatRecord | None:
        return self._records.get(key)

    def seed(self, key: Key, record: engine.HeartbeatRecord) -> None:
        """A record from the replicated state (a new leader): already checkpointed."""
        self._records[key] = record

    def note(
        self,
        key: Key,
        record: engine.HeartbeatRecord,
        saved: engine.HeartbeatRecord | None,
        timeout: int,
    ) -> None:
        """The session's latest record; ``saved`` is its checkpointed one."""
        self._records[key] = record
        if checkpoint_due(record, saved, timeout):
            self._dirty_records.add(key)

    def group_time(self, group_id: str, default: int) -> int:
        return self._group_times.get(group_id, default)

    def seed_group_time(self, group_id: str, ticks: int) -> None:
        self._group_times[group_id] = ticks

    def advance_group_time(self, group_id: str, ticks: int, replicated: int) -> None:
        """The primary reported data processed at ``ticks``: kept when it is later."""
        if ticks > self._group_times.get(group_id, replicated):
            self._group_times[group_id] = ticks
            self._dirty_groups.add(group_id)

    def take(self) -> tuple[Records, GroupTimes] | None:
        """What the next SaveCheckpoint carries, at most MAX_CHECKPOINT_RECORDS records (the
        rest go with the next one); None when nothing changed."""
        if not self._dirty_records and not self._dirty_groups:
            return None
        dirty = self._dirty_records
        if len(dirty) > MAX_CHECKPOINT_RECORDS:
            keys = [dirty.pop() for _ in range(MAX_CHECKPOINT_RECORDS)]
        else:
            keys, self._dirty_records = list(dirty), set()
        records = tuple((g, s, self._records[(g, s)]) for g, s in keys if (g, s) in self._records)
        times = tuple(
            (g, self._group_times[g]) for g in self._dirty_groups if g in self._group_times
        )
        self._dirty_groups = set()
        return records, times
