"""How a node runs Python's cyclic garbage collector: long-lived objects out of every scan.

The collector stops the whole process (event loop and pysyncobj's tick thread alike) while it
scans every tracked object of a generation. A node's long-lived objects grow with the state:
every group, session, heartbeat record and role event, and the leader's liveness tables. Freezing
only what existed at start (issue 6) left all of those in the oldest generation, so its full
scans grew with the number of sessions: at 20,000 sessions one took 575 ms
(``bench/profile_hotpath.py``), a stall that a p99 of 50 ms cannot absorb and that comes close
to the lease (``leader_fallback``, 1 s).

So every ``REFREEZE_EVERY`` seconds the young generations are collected and everything that
survived is frozen (``gc.freeze``: moved out of every later scan, in constant time); garbage
without cycles is still freed at once by reference counting, frozen or not. What a freeze can
keep is cyclic garbage that was already old when frozen; a full pass with everything unfrozen
every ``FULL_EVERY`` seconds frees it, so memory stays bounded at one long pause per quarter of an
hour instead of one every few seconds.
"""

from __future__ import annotations

import gc
import logging
import threading
import time

__all__ = [
    "FULL_EVERY",
    "GC_THRESHOLDS",
    "PAUSES",
    "REFREEZE_EVERY",
    "Pauses",
    "refreeze",
    "start",
    "tune",
]

log = logging.getLogger("cfs.gc")

# Measured in issue 6: with 2,000 groups and 4,000 heartbeats/s at the leader, p99 ~100 ms with
# the default thresholds, 42-81 ms with these (every generation runs less often).
GC_THRESHOLDS = (10_000, 10, 10)
REFREEZE_EVERY = 10.0  # seconds
FULL_EVERY = 900.0  # seconds


class Pauses:
    """Collections and the seconds they stopped the process, per generation (``/metrics``)."""

    def __init__(self) -> None:
        self.counts = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.longest = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:  # gc.callbacks signature
        if phase == "start":
            self._started = time.perf_counter()
            return
        spent = time.perf_counter() - self._started
        generation = min(int(info.get("generation", 2)), 2)
        self.counts[generation] += 1
        self.seconds[generation] += spent
        self.longest = max(self.longest, spent)


PAUSES = Pauses()


def tune() -> None:
    """At start: everything loaded so far lives as long as the process."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    if PAUSES not in gc.callbacks:
        gc.callbacks.append(PAUSES)


def refreeze() -> None:
    """Collect the young generations, then freeze what survived them."""
    gc.collect(1)
    gc.freeze()


def full_collection() -> float:
    """Unfreeze, collect everything, freeze again; the seconds it took."""
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return time.perf_counter() - started


def start(
    refreeze_every: float = REFREEZE_EVERY, full_every: float = FULL_EVERY
) -> threading.Thread:
    """The housekeeping thread (a daemon: it dies with the process)."""

    def run() -> None:
        last_full = time.monotonic()
        while True:
            time.sleep(refreeze_every)
            if time.monotonic() - last_full >= full_every:
                last_full = time.monotonic()
                took = full_collection()
                log.debug("Full garbage collection took %.0f ms", took * 1e3)
            else:
                refreeze()

    thread = threading.Thread(target=run, name="cfs-gc", daemon=True)
    thread.start()
    return thread
