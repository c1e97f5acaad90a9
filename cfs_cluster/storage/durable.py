"""pysyncobj's SyncObj on the durable journal: nothing is counted or acknowledged unsynced.

Raft counts an entry towards commit once it is on stable storage at a majority. pysyncobj
assumes that of its journal; ``DurableSyncObj`` makes it true with ``journal.Storage``:

* **Leader.** Commands taken in one tick are appended, sent to the followers, and then synced
  with one ``fdatasync`` (group commit: concurrent writes share it) before the tick ends; the
  leader counts itself towards commit only in a later tick, after that sync.
* **Follower.** Entries from append_entries are appended; the acknowledgements
  (``next_node_idx``) wait in order and leave at the start of the next tick, after one sync for
  every message received in between.
* **Votes and terms** are synced inside ``setCurrentTerm``, before pysyncobj sends the vote or
  counts its own.
* **Refused writes** (disk full): the command is answered ``STORAGE_REFUSED`` (the API answers
  503) and pysyncobj carries on; heartbeats are answered from memory and do not write.
* **Failures that would wedge the node exit the process** with a message: an exception while
  applying a committed entry (pysyncobj would retry that entry forever), a failed sync, an
  unreadable snapshot. A supervisor restarts it; the journal is intact up to the last sync.

pysyncobj builds its journal, snapshot store and command queue inside ``SyncObj.__init__``
(which also starts the tick thread), so they are substituted there, under a lock, through the
module names it looks up.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, NoReturn

import pysyncobj.syncobj as pysyncobj_module
from pysyncobj import SyncObj, SyncObjConf
from pysyncobj.fast_queue import FastQueue
from pysyncobj.syncobj import SyncObjExceptionWrongVer
from pysyncobj.transport import TCPTransport

from cfs_cluster.storage.files import SyncFailed, WriteRefused
from cfs_cluster.storage.journal import Storage

__all__ = ["EXIT_APPLY_FAILED", "EXIT_IO_ERROR", "STORAGE_REFUSED", "DurableSyncObj", "fatal"]

log = logging.getLogger("cfs.storage")

# A FAIL_REASON of our own (pysyncobj's go up to 7): forwarded unchanged to a follower that
# relayed the command, so it can answer with the same reason.
STORAGE_REFUSED = 100
EXIT_APPLY_FAILED = 70  # EX_SOFTWARE
EXIT_IO_ERROR = 74  # EX_IOERR

_construction = threading.Lock()


def fatal(message: str, code: int) -> NoReturn:
    """Log ``message`` and end the process now: carrying on would leave the node wedged."""
    log.critical("%s The node stops (exit %d).", message, code)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(code)


class _RememberingQueue(FastQueue):  # type: ignore[misc]
    """pysyncobj's command queue; remembers the command taken last, to answer it if its
    journal write is refused (pysyncobj would drop it without an answer)."""

    def __init__(self, max_size: int) -> None:
        super().__init__(max_size)
        self.last: tuple[Any, Any] | None = None

    def get_nowait(self) -> tuple[Any, Any]:
        item: tuple[Any, Any] = super().get_nowait()
        self.last = item
        return item


class _AckAfterSyncTransport(TCPTransport):  # type: ignore[misc]
    """Holds a follower's acknowledgements while its journal has unsynced writes."""

    def send(self, node: Any, message: Any) -> bool:
        owner = self._syncObj
        if message.get("type") == "next_node_idx" and owner._hold_ack(node, message):
            return True
        return bool(super().send(node, message))

    def setOnMessageReceivedCallback(self, callback: Any) -> None:
        def guarded(node: Any, message: Any) -> None:
            # A refused append was logged once by the storage; the leader sends it again.
            with suppress(WriteRefused):
                callback(node, message)

        super().setOnMessageReceivedCallback(guarded if callback is not None else None)


class DurableSyncObj(SyncObj):  # type: ignore[misc]
    """SyncObj whose journal, term/vote and snapshot are ``storage``'s, synced before use."""

    def __init__(
        self,
        self_node: str,
        other_nodes: list[str],
        conf: SyncObjConf,
        consumers: list[Any],
        storage: Storage,
    ) -> None:
        # Set before SyncObj.__init__, which treats every attribute set later as state to
        # put into snapshots.
        self._storage = storage
        self._held_acks: list[tuple[Any, Any]] = []
        self._queue: _RememberingQueue | None = None
        with self._substituted(storage, conf):
            super().__init__(
                self_node, other_nodes, conf, consumers, transportClass=_AckAfterSyncTransport
            )

    @contextmanager
    def _substituted(self, storage: Storage, conf: SyncObjConf) -> Iterator[None]:
        def create_queue(max_size: int) -> _RememberingQueue:
            self._queue = _RememberingQueue(max_size)
            return self._queue

        names: dict[str, Callable[..., Any]] = {
            "createJournal": lambda _path: storage.journal,
            "Serializer": lambda *_args: _FatalOnUnreadable(storage),
            "FastQueue": create_queue,
        }
        with _construction:
            saved = {name: getattr(pysyncobj_module, name) for name in names}
            for name, value in names.items():
                setattr(pysyncobj_module, name, value)
            try:
                yield
            finally:
                for name, value in saved.items():
                    setattr(pysyncobj_module, name, value)

    # ----------------------------------------------------------------- sync points

    def _hold_ack(self, node: Any, message: Any) -> bool:
        """Hold an acknowledgement while writes are unsynced (or others wait: keep order)."""
        if self._storage.journal.dirty or self._held_acks:
            self._held_acks.append((node, message))
            return True
        return False

    def _sync(self) -> None:
        try:
            self._storage.journal.sync()
        except SyncFailed as exc:
            fatal(f"{exc.strerror}: writes since the last sync may be lost.", EXIT_IO_ERROR)

    def _onTick(self, timeToWait: float = 0.0) -> None:
        self._sync()
        held, self._held_acks = self._held_acks, []
        for node, message in held:
            TCPTransport.send(self._SyncObj__transport, node, message)
        try:
            super()._onTick(timeToWait)
        except WriteRefused:
            time.sleep(timeToWait)  # e.g. the no-op of a new term; tried again next tick
        except SyncFailed as exc:
            fatal(f"{exc.strerror}: writes since the last sync may be lost.", EXIT_IO_ERROR)

    def _checkCommandsToApply(self) -> None:
        """Append the queued commands (leader), then one sync for all of them."""
        while True:
            try:
                super()._checkCommandsToApply()
                break
            except WriteRefused:
                self._refuse_last_command()
        self._sync()

    def _refuse_last_command(self) -> None:
        if self._queue is None or self._queue.last is None:
            return
        _command, callback = self._queue.last
        self._queue.last = None
        self._SyncObj__callErrCallback(STORAGE_REFUSED, callback)

    # ----------------------------------------------------------------- apply

    def _SyncObj__doApplyCommand(self, command: bytes) -> Any:
        """Apply one committed entry; an exception ends the process instead of pysyncobj's
        endless retry of the same entry (the engine's apply is total, so this means a bug or
        an entry damaged in memory)."""
        try:
            return SyncObj._SyncObj__doApplyCommand(self, command)
        except SyncObjExceptionWrongVer:
            raise
        except Exception as exc:
            fatal(
                f"Applying Raft entry {self.raftLastApplied + 1} failed: {exc!r}. Restarting "
                "replays it; if it fails again, restore this node from its peers "
                "(docs/operations.md).",
                EXIT_APPLY_FAILED,
            )


class _FatalOnUnreadable:
    """The snapshot store, except that a snapshot that cannot be loaded ends the process
    (pysyncobj would log it and run on without the state)."""

    def __init__(self, storage: Storage) -> None:
        self._store = storage.snapshots

    def deserialize(self) -> Any:
        try:
            return self._store.deserialize()
        except Exception as exc:
            fatal(f"Cannot load the snapshot {self._store.path}: {exc}", EXIT_IO_ERROR)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)
