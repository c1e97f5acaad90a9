"""ops/gcpolicy.py: survivors are frozen out of later scans, and pauses are counted."""

from __future__ import annotations

import gc
import weakref

from cfs_cluster.ops import gcpolicy


class _Node:
    def __init__(self) -> None:
        self.peer: _Node | None = None


def test_refreeze_moves_survivors_out_of_every_later_scan_and_counts_pauses() -> None:
    before = gc.get_freeze_count()
    collections = sum(gcpolicy.PAUSES.counts)
    gc.callbacks.append(gcpolicy.PAUSES)
    try:
        kept = [_Node() for _ in range(1_000)]  # long-lived state created after start
        gcpolicy.refreeze()
        assert gc.get_freeze_count() >= before + len(kept)
        assert sum(gcpolicy.PAUSES.counts) > collections  # the young pass was timed
        assert gcpolicy.PAUSES.longest > 0
    finally:
        gc.callbacks.remove(gcpolicy.PAUSES)
        gc.unfreeze()


def test_a_frozen_cycle_survives_collections_until_the_full_pass() -> None:
    gc.collect()
    a, b = _Node(), _Node()
    a.peer, b.peer = b, a  # a cycle: reference counting alone never frees it
    alive = weakref.ref(a)
    gc.freeze()
    try:
        del a, b
        gc.collect()
        assert alive() is not None  # frozen: no collection looks at it
        gcpolicy.full_collection()
        assert alive() is None
    finally:
        gc.unfreeze()
