"""CPU cost of the leader's heartbeat handling and of one liveness checkpoint, in process.

No HTTP, no Raft: ``Coordinator.heartbeat`` against a replicator stand-in that applies engine
commands at once, N sessions (N/2 groups × 2) in steady state (live primary, unchanged scores),
each heartbeating every T/2 on a fake clock. Reports µs per heartbeat, the records one
checkpoint interval replicates, and what that SaveCheckpoint costs to pickle, encrypt (the Raft
password) and unpickle — the work every node does per checkpoint. CPU time, so it is far less
sensitive to other load on the machine than a latency. Compare two trees in one run:

    .venv/bin/python -m bench.profile_hotpath                      # this tree
    cd /tmp && PYTHONPATH=/tmp/base /work/wt-perfcore/.venv/bin/python -m bench.profile_hotpath
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import pickle
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import cfs_cluster
from cfs_cluster import engine
from cfs_cluster.cluster.liveness import Coordinator

try:
    from cfs_cluster.ops import gcpolicy
except ImportError:  # a tree from before ops/gcpolicy.py
    gcpolicy = None  # type: ignore[assignment]
from cfs_cluster.protocol.heartbeat import HeartbeatReport
from cfs_cluster.protocol.wire import TICKS_PER_SECOND
from cfs_cluster.settings import FailoverSettings, RaftSettings

T = 15


class _Replicator:
    def __init__(self) -> None:
        self.state = engine.ClusterState()
        self.submitted: list[engine.Command] = []
        self.count = 0

    @contextmanager
    def read(self) -> Iterator[engine.ClusterState]:
        yield self.state

    async def submit(self, command: engine.Command, timeout: float) -> engine.Result:
        # Only the last command is kept: a node keeps none (its log holds pickled bytes).
        self.submitted[:] = [command]
        self.count += 1
        return engine.apply(self.state, command)

    def term(self) -> int:
        return 1

    def is_leader(self) -> bool:
        return True

    def has_lease(self) -> bool:
        return True


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def mono(self) -> float:
        return self.t

    def wall(self) -> float:
        return 1_780_000_000.0 + self.t


class _GcTimer:
    """Time spent in the cyclic garbage collector, per generation."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.counts = [0, 0, 0]
        self.longest = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        spent = time.perf_counter() - self._started
        self.seconds[info["generation"]] += spent
        self.counts[info["generation"]] += 1
        self.longest = max(self.longest, spent)


async def _run(sessions: int, rounds: int, refreeze: bool) -> dict[str, Any]:
    clock, replicator = _Clock(), _Replicator()
    coordinator = Coordinator(
        replicator,  # type: ignore[arg-type]
        FailoverSettings(),
        RaftSettings(),
        request_timeout=1.0,
        clock=clock.mono,
        wall=clock.wall,
    )
    coordinator._raft_state_changed("leader")
    assert coordinator._opening is not None
    await coordinator._opening
    groups = sessions // 2
    for g in range(groups):
        engine.apply(
            replicator.state, engine.CreateGroup(f"c{g}", f"g{g}", None, None, T * TICKS_PER_SECOND)
        )
        for s in ("a", "b"):
            engine.apply(replicator.state, engine.RegisterSession(f"r{g}{s}", f"g{g}", s, None))
    reports = [
        HeartbeatReport(f"g{g}", s, 100.0 if s == "a" else 50.0, None, None)
        for g in range(groups)
        for s in ("a", "b")
    ]
    for _ in range(3):  # grants (PendingPrimary, then the confirmation)
        for report in reports:
            await coordinator.heartbeat(report)
    await coordinator._flush_checkpoint()
    decided = replicator.count
    step = (T / 2) / len(reports)  # every session once per T/2
    checkpoint_every = round(FailoverSettings().checkpoint_interval / step)
    records: list[int] = []
    last: engine.SaveCheckpoint | None = None
    elapsed = 0.0
    timer = _GcTimer()
    gc.callbacks.append(timer)
    for _ in range(rounds):
        for i, report in enumerate(reports):
            clock.t += step
            started = time.process_time()
            await coordinator.heartbeat(report)
            elapsed += time.process_time() - started
            if (
                refreeze and gcpolicy and i % (5 * checkpoint_every) == 0
            ):  # every 10 s, as gcpolicy.start
                started = time.process_time()
                gcpolicy.refreeze()
                elapsed += time.process_time() - started
            if i % checkpoint_every == checkpoint_every - 1:
                before = replicator.count
                await coordinator._flush_checkpoint()
                if replicator.count > before:
                    command = replicator.submitted[-1]
                    assert isinstance(command, engine.SaveCheckpoint)
                    records.append(len(command.heartbeats))
                    last = command
    gc.callbacks.remove(timer)
    last = (
        next(c for c in reversed(replicator.submitted) if isinstance(c, engine.SaveCheckpoint))
        if records
        else None
    )
    return {
        "tree": str(cfs_cluster.__file__).rsplit("/cfs_cluster/", 1)[0],
        "sessions": sessions,
        "heartbeats": rounds * len(reports),
        "us_per_heartbeat": round(elapsed / (rounds * len(reports)) * 1e6, 2),
        "decisions_in_steady_state": replicator.count - decided - len(records),
        "checkpoints": len(records),
        "records_per_checkpoint_mean": round(sum(records) / len(records)) if records else 0,
        "records_per_checkpoint_max": max(records, default=0),
        "gc_collections_by_generation": timer.counts,
        "gc_ms_by_generation": [round(x * 1e3, 1) for x in timer.seconds],
        "gc_longest_pause_ms": round(timer.longest * 1e3, 1),
        "checkpoint_cost": _checkpoint_cost(last) if last is not None else None,
    }


def _checkpoint_cost(command: engine.SaveCheckpoint) -> dict[str, float]:
    from pysyncobj.encryptor import getEncryptor

    encryptor = getEncryptor("a Raft password")
    started = time.process_time()
    data = pickle.dumps(command)
    encrypted = encryptor.encrypt(data)
    pickle.loads(encryptor.decrypt(encrypted))
    return {
        "bytes": len(data),
        "ms_pickle_encrypt_unpickle": round((time.process_time() - started) * 1e3, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--gc",
        choices=["start", "refreeze"],
        default="refreeze",
        help="freeze only at start (before), or every 10 s (gcpolicy.start)",
    )
    args = parser.parse_args()
    if gcpolicy is not None:
        gcpolicy.tune()
    else:  # what api/server.py did before ops/gcpolicy.py
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 10, 10)
    result = asyncio.run(_run(args.sessions, args.rounds, args.gc == "refreeze"))
    print(json.dumps({"gc": args.gc, **result}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
