"""The node's wall clock and its test-only skew shim (cluster/clock.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cfs_cluster.cluster import clock
from cfs_cluster.cluster.clock import WallClock


def _touch_later(path: Path, text: str, step: int) -> None:
    """Rewrite ``path`` with a distinct mtime (a coarse file-system clock could repeat it)."""
    path.write_text(text)
    stamp = time.time_ns() + step * 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


def test_without_a_file_it_is_the_system_clock() -> None:
    wall = WallClock()
    assert abs(wall() - time.time()) < 0.5


def test_the_offset_in_the_file_is_added_and_followed_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "n1.clock"
    _touch_later(path, "120\n", 1)
    wall = WallClock(path)
    assert abs(wall() - time.time() - 120) < 0.5
    _touch_later(path, "-3600\n", 2)
    wall._checked = float("-inf")  # as if REFRESH_SECONDS had passed
    assert abs(wall() - time.time() + 3600) < 0.5


def test_a_file_being_rewritten_or_gone_keeps_the_last_offset(tmp_path: Path) -> None:
    path = tmp_path / "n1.clock"
    _touch_later(path, "30", 1)
    wall = WallClock(path)
    assert abs(wall() - time.time() - 30) < 0.5
    _touch_later(path, "not a number", 2)
    wall._checked = float("-inf")
    assert abs(wall() - time.time() - 30) < 0.5
    path.unlink()
    wall._checked = float("-inf")
    assert abs(wall() - time.time() - 30) < 0.5
    assert clock.REFRESH_SECONDS <= 0.1  # tests wait a few of these after writing the file
