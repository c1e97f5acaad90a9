"""The node's wall clock, and the test-only shim that skews it.

Grants, leases and liveness run on monotonic clocks and never read the wall clock. The wall
clock (UTC) is read for what must mean the same on every node and survive a leader change:
the expiry of a timed role override (stored in the log as UTC ticks: computed by the node
that receives the request, compared by the leader), deletion and decision times in a group's
history, and a new leader's judgement of which checkpointed heartbeats are recent
(docs/safety.md, *Clocks*).

``cfs serve --test-clock-file PATH`` (CFS_TEST_CLOCK_FILE), for fault tests only, adds the
number of seconds written in PATH to every reading, re-read when the file changes, so a test
can skew one node's wall clock or make it jump while the node runs (libfaketime breaks
Python 3.11's sleeps, so the node honours this instead).
"""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["WallClock"]

REFRESH_SECONDS = 0.05  # how often the shim looks at its file


class WallClock:
    """``time.time()``, plus the offset in ``offset_file`` when one is given (tests only)."""

    def __init__(self, offset_file: Path | None = None) -> None:
        self._file = offset_file
        self._offset = 0.0
        self._checked = float("-inf")
        self._stamp: int | None = None

    def __call__(self) -> float:
        if self._file is not None:
            self._refresh(self._file)
        return time.time() + self._offset

    def _refresh(self, path: Path) -> None:
        now = time.monotonic()
        if now - self._checked < REFRESH_SECONDS:
            return
        self._checked = now
        try:
            stamp = path.stat().st_mtime_ns
            if stamp != self._stamp:
                self._offset, self._stamp = float(path.read_text().strip() or 0), stamp
        except (OSError, ValueError):
            pass  # a file being rewritten: keep the last offset, look again next time
