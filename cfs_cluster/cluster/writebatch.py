"""Writes submitted in one turn of the event loop go to Raft as one ``Batch`` entry.

A plant's adapters start together: every group's first heartbeat grants its primary and the
holder's next one confirms it, two Raft writes per group within T. Each entry costs the
leader's tick thread a message per follower, its encryption and its journal framing, so 10,000
groups made the first T's p99 877 ms. The commands submitted in one turn of the loop — the
decisions of every heartbeat that arrived together — now travel as one entry of up to
``MAX_BATCH_COMMANDS``, which ``engine.apply`` applies as the commands one by one (their own
handlers, term fences, deduplication and results). A lone command goes as itself, and nothing
is batched until every voter has published that it applies batches (a member of an earlier
release would refuse the entry: docs/safety.md, "Several writes in one entry").
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from pysyncobj.config import FAIL_REASON

from cfs_cluster import engine

__all__ = ["MAX_BATCH_COMMANDS", "Callback", "WriteBatcher"]

Callback = Callable[[Any, int], None]  # pysyncobj's: (result, FAIL_REASON)
MAX_BATCH_COMMANDS = 256  # commands per Batch entry; more submitted at once make more entries


class _Replicated(Protocol):
    def apply_command(self, command: engine.Command, *, callback: Callback) -> Any: ...


class WriteBatcher:
    def __init__(self, store: _Replicated, voters_apply_batches: Callable[[], bool]) -> None:
        self._store = store
        self._voters_apply_batches = voters_apply_batches
        self._pending: list[tuple[engine.Command, Callback]] = []  # this loop turn's writes

    def submit(self, command: engine.Command, callback: Callback) -> None:
        """Hand ``command`` to Raft with the others of this turn; ``callback`` gets its own
        result (on pysyncobj's tick thread, as for a command sent alone)."""
        self._pending.append((command, callback))
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if len(pending) == 1 or not self._voters_apply_batches():
            for command, callback in pending:
                self._store.apply_command(command, callback=callback)
            return
        for start in range(0, len(pending), MAX_BATCH_COMMANDS):
            chunk = pending[start : start + MAX_BATCH_COMMANDS]
            if len(chunk) == 1:
                self._store.apply_command(chunk[0][0], callback=chunk[0][1])
                continue
            batch = engine.Batch(
                request_id=f"batch:{uuid.uuid4().hex}", commands=tuple(c for c, _ in chunk)
            )
            self._store.apply_command(batch, callback=_BatchCallback([cb for _, cb in chunk]))


class _BatchCallback:
    """pysyncobj's callback for a Batch: each command's submitter gets its own result, or the
    batch's failure (none of its commands was applied, or the outcome is unknown for all)."""

    def __init__(self, callbacks: list[Callback]) -> None:
        self._callbacks = callbacks

    def __call__(self, result: Any, err: int) -> None:
        items = result.items if isinstance(result, engine.Result) else ()
        if err == FAIL_REASON.SUCCESS and len(items) == len(self._callbacks):
            for callback, item in zip(self._callbacks, items, strict=True):
                callback(item, err)
            return
        failure = err if err != FAIL_REASON.SUCCESS else FAIL_REASON.UNKNOWN_OUTCOME
        for callback in self._callbacks:
            callback(None, failure)
