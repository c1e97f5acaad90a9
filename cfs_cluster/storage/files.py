"""What the three stores share: file names and modes, the errors, durable file writes, and
whether the disk takes writes now (``Condition``)."""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "JOURNAL_FILE",
    "LEGACY_FILES",
    "META_FILE",
    "RESTORE_HINT",
    "SNAPSHOT_FILE",
    "Condition",
    "StorageCorrupt",
    "SyncFailed",
    "WriteRefused",
    "datasync",
    "is_refusal",
    "prepare_data_dir",
    "pwrite_all",
    "replace_file",
    "sync_dir",
]

log = logging.getLogger("cfs.storage")

JOURNAL_FILE = "raft.journal"
META_FILE = "raft.meta"
SNAPSHOT_FILE = "raft.dump"
LEGACY_FILES = ("raft.journal.meta",)  # pysyncobj's term file, before this format

FILE_MODE = 0o600
DIR_MODE = 0o700
_REFUSED_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG}
RESTORE_HINT = (
    "Do not edit the file. Move this node's data directory aside and start the node with an "
    "empty one: it receives the state from the leader (docs/operations.md, 'Restoring one "
    "node from its peers')."
)


class StorageCorrupt(Exception):
    """A data file is damaged beyond a torn tail; the node must not start on it."""


class WriteRefused(OSError):
    """A write could not be made (disk full, I/O error); nothing was changed."""


class SyncFailed(OSError):
    """fdatasync failed: what reached the disk is unknown, so the process must stop."""


def prepare_data_dir(path: Path) -> None:
    """Create the data directory 0700, or tighten an existing one (it holds password hashes,
    signing keys and health-endpoint credentials)."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        os.chmod(path, DIR_MODE)
        log.info("Data directory %s was mode %04o; set to 0700.", path, mode)


def sync_dir(path: Path, fsync: bool) -> None:
    if not fsync:
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]
        offset += written


def datasync(fd: int, fsync: bool, what: Path) -> None:
    if not fsync:
        return
    try:
        os.fdatasync(fd)
    except OSError as exc:
        raise SyncFailed(exc.errno, f"fdatasync of {what} failed: {exc.strerror}") from exc


def replace_file(path: Path, content: bytes, fsync: bool) -> None:
    """Write ``content`` to ``path`` atomically and durably (temp file, sync, rename, sync dir)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        pwrite_all(fd, content, 0)
        datasync(fd, fsync, tmp)
    except OSError:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    sync_dir(path.parent, fsync)


def is_refusal(exc: OSError) -> bool:
    return exc.errno in _REFUSED_ERRNOS


@dataclass
class Condition:
    """Whether this node can write its storage now; shared by the three stores."""

    problem: str | None = None
    since: float = 0.0
    refusals: int = 0
    listeners: list[Callable[[str | None], None]] = field(default_factory=list)

    def refused(self, what: str, exc: OSError) -> WriteRefused:
        self.refusals += 1
        reason = f"cannot write {what}: {exc.strerror or exc}"
        if self.problem is None:
            self.since = time.monotonic()
            log.error(
                "Storage: %s. Writes are refused (503) until space or the device is back; "
                "heartbeats and reads go on.",
                reason,
            )
            self._changed(reason)
        self.problem = reason
        return WriteRefused(exc.errno, reason)

    def wrote(self) -> None:
        if self.problem is not None:
            log.warning(
                "Storage: writable again after %.1f s (%s); writes resume.",
                time.monotonic() - self.since,
                self.problem,
            )
            self.problem = None
            self._changed(None)

    def _changed(self, problem: str | None) -> None:
        for listener in self.listeners:
            listener(problem)
