"""The durable Raft journal: log entries, term and vote, and the snapshot, on stable storage.

pysyncobj's own journal writes through ``mmap`` and never syncs, and its snapshot and term files
are renamed into place without a sync: a power loss can take back an acknowledged entry or a
vote. This module is the storage behind pysyncobj's ``Journal`` and ``Serializer`` interfaces
(``durable.py`` wires it in) with three properties:

* **Durable when synced.** Entries are appended with ``pwrite`` (never into unallocated mmap
  space: a full disk is an ``OSError``, not a SIGBUS) and made durable by ``sync()``, one
  ``fdatasync`` for everything written since the last one (group commit). Term and vote are
  written in place and synced before ``set_current_term`` returns. Renames are followed by a
  sync of the directory.
* **Every record checked.** Each journal record carries its length, index, term and a CRC-32;
  the term file has two checksummed slots; the snapshot a length and CRC-32. On open, a torn
  or corrupt *tail* (nothing valid after it: a write cut by a crash, never acknowledged because
  the sync precedes every acknowledgement) is reported and cut off; damage with valid records
  after it, or a bad snapshot or term file, raises ``StorageCorrupt`` naming the file.
* **Refusal, not a crash.** A write that fails (disk full, I/O error) raises ``WriteRefused``
  and leaves file and memory as they were; ``Storage.problem`` says why until a write (or the
  once-a-second probe) succeeds again. A failed *sync* raises ``SyncFailed``: after it, what
  reached the disk is unknown, so the caller must stop (see ``durable.py``).

Files (created 0600 in a 0700 directory): ``raft.journal`` (entries since the last snapshot),
``raft.meta`` (term, vote, commit index), ``raft.dump`` (the snapshot).
"""

from __future__ import annotations

import errno
import gzip
import logging
import os
import pickle
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.journal import Journal

__all__ = [
    "JOURNAL_FILE",
    "META_FILE",
    "SNAPSHOT_FILE",
    "Entry",
    "RaftJournal",
    "SnapshotStore",
    "Storage",
    "StorageCorrupt",
    "SyncFailed",
    "TermStore",
    "WriteRefused",
    "decode_snapshot",
    "encode_snapshot",
    "open_storage",
    "prepare_data_dir",
]

log = logging.getLogger("cfs.storage")

JOURNAL_FILE = "raft.journal"
META_FILE = "raft.meta"
SNAPSHOT_FILE = "raft.dump"
LEGACY_FILES = ("raft.journal.meta",)  # pysyncobj's term file, before this format

Entry = tuple[bytes, int, int]  # pysyncobj's (command, index, term)

_JOURNAL_MAGIC = b"CFSRAFTJ"
_JOURNAL_HEADER = struct.Struct("<8sII")  # magic, format version, reserved
_JOURNAL_VERSION = 1
_RECORD_MARK = b"\xc5\xf5\x10\x9e"  # starts every record: lets a scan find records past damage
_RECORD = struct.Struct("<4sIIQQ")  # mark, payload length, crc32, index, term
_MAX_PAYLOAD = 64 << 20  # far above any command; a larger length field is damage

_META_MAGIC = b"CFSMETA1"
_META_SLOT_SIZE = 512
_META_SLOT = struct.Struct("<8sQQQH")  # magic, sequence, term, commit index, vote length
_META_MAX_VOTE = _META_SLOT_SIZE - _META_SLOT.size - 4

_SNAPSHOT_MAGIC = b"CFSSNAP1"
_SNAPSHOT_HEADER = struct.Struct("<8sQI")  # magic, payload length, crc32 of the payload
_GZIP_MAGIC = b"\x1f\x8b"  # pysyncobj's own snapshot format (and older `cfs restore` output)

_FILE_MODE = 0o600
_DIR_MODE = 0o700
_REFUSED_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG}
_RESTORE_HINT = (
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


# --------------------------------------------------------------------------- file helpers


def prepare_data_dir(path: Path) -> None:
    """Create the data directory 0700, or tighten an existing one (it holds password hashes,
    signing keys and health-endpoint credentials)."""
    path.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        os.chmod(path, _DIR_MODE)
        log.info("Data directory %s was mode %04o; set to 0700.", path, mode)


def _sync_dir(path: Path, fsync: bool) -> None:
    if not fsync:
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]
        offset += written


def _datasync(fd: int, fsync: bool, what: Path) -> None:
    if not fsync:
        return
    try:
        os.fdatasync(fd)
    except OSError as exc:
        raise SyncFailed(exc.errno, f"fdatasync of {what} failed: {exc.strerror}") from exc


def _replace_file(path: Path, content: bytes, fsync: bool) -> None:
    """Write ``content`` to ``path`` atomically and durably (temp file, sync, rename, sync dir)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
    try:
        _pwrite_all(fd, content, 0)
        _datasync(fd, fsync, tmp)
    except OSError:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    _sync_dir(path.parent, fsync)


def _is_refusal(exc: OSError) -> bool:
    return exc.errno in _REFUSED_ERRNOS


# --------------------------------------------------------------------------- problem state


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


# --------------------------------------------------------------------------- the journal


def _encode_record(command: bytes, index: int, term: int) -> bytes:
    header_crc = zlib.crc32(struct.pack("<IQQ", len(command), index, term))
    crc = zlib.crc32(command, header_crc)
    return _RECORD.pack(_RECORD_MARK, len(command), crc, index, term) + command


def _decode_record(data: bytes, offset: int) -> tuple[Entry, int] | None:
    """The record at ``offset`` and the offset after it, or None if it is not a whole,
    intact record."""
    if len(data) - offset < _RECORD.size:
        return None
    mark, length, crc, index, term = _RECORD.unpack_from(data, offset)
    end = offset + _RECORD.size + length
    if mark != _RECORD_MARK or length > _MAX_PAYLOAD or end > len(data):
        return None
    command = data[offset + _RECORD.size : end]
    if zlib.crc32(command, zlib.crc32(struct.pack("<IQQ", length, index, term))) != crc:
        return None
    return (command, index, term), end


def _valid_record_after(data: bytes, offset: int) -> int | None:
    """Offset of the first intact record that starts after ``offset``, if any."""
    position = data.find(_RECORD_MARK, offset + 1)
    while position >= 0:
        if _decode_record(data, position) is not None:
            return position
        position = data.find(_RECORD_MARK, position + 1)
    return None


@dataclass
class _Scan:
    entries: list[Entry]
    offsets: list[int]
    end: int  # offset after the last valid record


def _journal_header() -> bytes:
    return _JOURNAL_HEADER.pack(_JOURNAL_MAGIC, _JOURNAL_VERSION, 0)


def _scan_journal(path: Path, data: bytes) -> _Scan:
    """Parse a journal; raise StorageCorrupt for damage that is not a torn tail."""
    if len(data) < _JOURNAL_HEADER.size:
        raise StorageCorrupt(
            f"{path}: the header is truncated ({len(data)} bytes). {_RESTORE_HINT}"
        )
    if data[: _JOURNAL_HEADER.size] != _journal_header():
        raise StorageCorrupt(
            f"{path}: not a cfs journal of format {_JOURNAL_VERSION} (header {data[:12]!r}). "
            + _RESTORE_HINT
        )
    entries: list[Entry] = []
    offsets: list[int] = []
    offset = _JOURNAL_HEADER.size
    while offset < len(data):
        decoded = _decode_record(data, offset)
        if decoded is None:
            break
        entry, after = decoded
        if entries and (entry[1] != entries[-1][1] + 1 or entry[2] < entries[-1][2]):
            raise StorageCorrupt(
                f"{path}: record at offset {offset} has index {entry[1]} term {entry[2]} after "
                f"index {entries[-1][1]} term {entries[-1][2]}. {_RESTORE_HINT}"
            )
        entries.append(entry)
        offsets.append(offset)
        offset = after
    if offset < len(data):
        later = _valid_record_after(data, offset)
        if later is not None:
            raise StorageCorrupt(
                f"{path}: the record at offset {offset} is damaged and intact records follow "
                f"(the next at offset {later}); entries in the middle of the log are lost. "
                + _RESTORE_HINT
            )
    return _Scan(entries, offsets, offset)


class RaftJournal(Journal):  # type: ignore[misc]
    """pysyncobj's Journal interface over an append-only, checksummed file.

    All calls come from pysyncobj's tick thread (and its constructor before that). ``add`` and
    the deletions only write; ``sync`` makes them durable. A deletion from the end is kept
    pending while pysyncobj re-adds the same entries (it truncates and re-appends on every
    overlapping append_entries), so entries a leader already counted are never taken off
    the disk only to be written again.
    """

    def __init__(self, path: Path, terms: TermStore, condition: Condition, fsync: bool) -> None:
        self.path = path
        self._terms = terms
        self._condition = condition
        self._fsync = fsync
        if not path.exists():
            _replace_file(path, _journal_header(), fsync)
        data = path.read_bytes()
        scan = _scan_journal(path, data)
        self._fd = os.open(path, os.O_RDWR)
        if scan.end < len(data):
            self._cut_tail(scan, len(data))
        self._entries = scan.entries
        self._offsets = scan.offsets
        self._size = scan.end
        self._pending_cut: list[Entry] = []  # deleted from memory, still on disk
        self._dirty = False
        self._commit_index = min(terms.commit_index, self._last_index())
        self._stored_commit = self._commit_index
        self.syncs = 0

    def _cut_tail(self, scan: _Scan, size: int) -> None:
        dropped = size - scan.end
        log.warning(
            "%s: dropped a torn or corrupt tail of %d bytes at offset %d (after %d intact "
            "records, last index %s); it was never acknowledged. The node catches up from "
            "the leader.",
            self.path,
            dropped,
            scan.end,
            len(scan.entries),
            scan.entries[-1][1] if scan.entries else "none",
        )
        os.ftruncate(self._fd, scan.end)
        _datasync(self._fd, self._fsync, self.path)

    def _last_index(self) -> int:
        return self._entries[-1][1] if self._entries else 0

    @property
    def dirty(self) -> bool:
        """Written (or cut) since the last sync: acknowledgements must wait."""
        return self._dirty or bool(self._pending_cut)

    # ----------------------------------------------------------------- pysyncobj's interface

    def add(self, command: bytes, idx: int, term: int) -> None:
        entry = (bytes(command), int(idx), int(term))
        if self._pending_cut and self._pending_cut[0] == entry:
            self._entries.append(self._pending_cut.pop(0))  # still on disk, unchanged
            return
        self._apply_pending_cut()
        record = _encode_record(*entry)
        try:
            _pwrite_all(self._fd, record, self._size)
        except OSError as exc:
            self._undo_partial_write()
            if not _is_refusal(exc):
                raise
            raise self._condition.refused(self.path.name, exc) from exc
        self._entries.append(entry)
        self._offsets.append(self._size)
        self._size += len(record)
        self._dirty = True
        self._condition.wrote()

    def _undo_partial_write(self) -> None:
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            log.exception("%s: could not cut a partial record at %d", self.path, self._size)

    def clear(self) -> None:
        self._pending_cut = []
        self._truncate_to(0)

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        self._pending_cut = self._entries[entryFrom:] + self._pending_cut
        del self._entries[entryFrom:]

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Drop the entries a snapshot now covers: rewrite the file with the rest."""
        self._apply_pending_cut()
        kept = self._entries[entryTo:]
        records = [_encode_record(*entry) for entry in kept]
        header = _journal_header()
        try:
            _replace_file(self.path, header + b"".join(records), self._fsync)
        except SyncFailed:
            raise
        except OSError as exc:
            if not _is_refusal(exc):
                raise
            raise self._condition.refused(self.path.name, exc) from exc
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_RDWR)
        self._entries = kept
        self._offsets = []
        offset = _JOURNAL_HEADER.size
        for record in records:
            self._offsets.append(offset)
            offset += len(record)
        self._size = offset
        self._dirty = False
        self.syncs += 1

    def __getitem__(self, item: Any) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        try:
            self.sync()
        finally:
            os.close(self._fd)
            self._terms.close()

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        self._commit_index = raftCommitIndex

    def getRaftCommitIndex(self) -> int:
        return max(1, self._commit_index)

    def setCurrentTerm(self, term: int, votedForNodeId: str | None) -> None:
        """Raft: term and vote are on disk before any message that reflects them is sent."""
        changed_vote = votedForNodeId is not None and (term, votedForNodeId) != (
            self._terms.term,
            self._terms.vote,
        )
        self._terms.store(term, votedForNodeId, self._stored_commit)
        if changed_vote:
            log.info("Raft term %d: voted for %s (synced).", term, votedForNodeId)

    def getCurrentTerm(self) -> int:
        return self._terms.term

    def getVotedForNodeId(self) -> str | None:
        return self._terms.vote

    def onOneSecondTimer(self) -> None:
        """Store the commit index (once a second, like pysyncobj: it only speeds up a restart)
        and, while writes are refused, probe whether space is back."""
        if self._condition.problem is not None:
            self._probe()
        if self._commit_index != self._stored_commit:
            self.sync()  # the stored commit index never exceeds the durable log
            commit = min(self._commit_index, self._last_index())
            try:
                self._terms.store(self._terms.term, self._terms.vote, commit)
            except WriteRefused:
                return
            self._stored_commit = commit

    # ----------------------------------------------------------------- durability

    def sync(self) -> bool:
        """Make every write so far durable; True if there was anything to sync."""
        if not self.dirty:
            return False
        self._apply_pending_cut()
        if self._dirty:
            _datasync(self._fd, self._fsync, self.path)
            self._dirty = False
            self.syncs += 1
        return True

    def _apply_pending_cut(self) -> None:
        if self._pending_cut:
            self._pending_cut = []
            self._truncate_to(len(self._entries))

    def _truncate_to(self, count: int) -> None:
        """Cut the file after ``count`` entries, durably before anything else is appended: a
        crash must never leave new records in front of old ones."""
        size = self._offsets[count] if count < len(self._offsets) else self._size
        os.ftruncate(self._fd, size)
        _datasync(self._fd, self._fsync, self.path)
        del self._entries[count:]
        del self._offsets[count:]
        self._size = size
        self._dirty = False
        self.syncs += 1

    def _probe(self) -> None:
        """Can the file grow again? Reserve a little space and give it back."""
        try:
            os.posix_fallocate(self._fd, self._size, 64 << 10)
            os.ftruncate(self._fd, self._size)
        except OSError:
            return
        self._condition.wrote()


# --------------------------------------------------------------------------- term and vote


class TermStore:
    """``raft.meta``: term, vote and commit index in two checksummed slots written in place.

    Each store overwrites the older slot and syncs it; a write torn by a crash leaves the
    other slot (the state before the write, which nothing had acted on yet). Writing in place
    needs no new disk space, so votes and term changes go on when the disk is full.
    """

    def __init__(self, path: Path, condition: Condition, fsync: bool) -> None:
        self.path = path
        self._condition = condition
        self._fsync = fsync
        self.term = 0
        self.vote: str | None = None
        self.commit_index = 0
        self._sequence = 0
        if not path.exists():
            _replace_file(path, self._slot(0) + self._slot(1), fsync)
        self._load()
        self._fd = os.open(path, os.O_RDWR)

    def _slot(self, sequence: int) -> bytes:
        vote = b"" if self.vote is None else self.vote.encode()
        if len(vote) > _META_MAX_VOTE:
            raise ValueError(f"node id too long for {self.path.name}: {self.vote!r}")
        has_vote = 0 if self.vote is None else 1
        body = _META_SLOT.pack(
            _META_MAGIC, sequence, self.term, self.commit_index, (has_vote << 15) | len(vote)
        )
        body += vote.ljust(_META_MAX_VOTE, b"\0")
        return body + struct.pack("<I", zlib.crc32(body))

    def _load(self) -> None:
        data = self.path.read_bytes()
        slots = [self._read_slot(data, i) for i in range(2)]
        valid = [slot for slot in slots if slot is not None]
        if not valid:
            raise StorageCorrupt(
                f"{self.path}: both copies of the term and vote are damaged; starting without "
                f"them could vote twice in one term. {_RESTORE_HINT}"
            )
        if len(valid) == 1:
            log.warning(
                "%s: one copy of the term and vote is damaged (a write cut by a crash); "
                "using the other.",
                self.path,
            )
        self._sequence, self.term, self.commit_index, self.vote = max(valid)

    def _read_slot(self, data: bytes, index: int) -> tuple[int, int, int, str | None] | None:
        raw = data[index * _META_SLOT_SIZE : (index + 1) * _META_SLOT_SIZE]
        if len(raw) != _META_SLOT_SIZE:
            return None
        (crc,) = struct.unpack_from("<I", raw, _META_SLOT_SIZE - 4)
        if zlib.crc32(raw[:-4]) != crc:
            return None
        magic, sequence, term, commit, vote_field = _META_SLOT.unpack_from(raw)
        if magic != _META_MAGIC:
            return None
        length = vote_field & 0x7FFF
        start = _META_SLOT.size
        vote = raw[start : start + length].decode() if vote_field >> 15 else None
        return sequence, term, commit, vote

    def store(self, term: int, vote: str | None, commit_index: int) -> None:
        previous = (self.term, self.vote, self.commit_index)
        self.term, self.vote, self.commit_index = term, vote, commit_index
        sequence = self._sequence + 1
        try:
            _pwrite_all(self._fd, self._slot(sequence), (sequence % 2) * _META_SLOT_SIZE)
        except OSError as exc:
            self.term, self.vote, self.commit_index = previous
            if not _is_refusal(exc):
                raise
            raise self._condition.refused(self.path.name, exc) from exc
        _datasync(self._fd, self._fsync, self.path)
        self._sequence = sequence

    def close(self) -> None:
        os.close(self._fd)


# --------------------------------------------------------------------------- the snapshot


def encode_snapshot(data: Any) -> bytes:
    """The snapshot file for pysyncobj's dump tuple (state, last entry, previous, cluster)."""
    payload = zlib.compress(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL), 1)
    header = _SNAPSHOT_HEADER.pack(_SNAPSHOT_MAGIC, len(payload), zlib.crc32(payload))
    return header + payload


def decode_snapshot(path: Path, content: bytes) -> Any:
    """Verify and unpickle a snapshot; StorageCorrupt names the defect."""
    if content.startswith(_GZIP_MAGIC):  # written before this format: no checksum to verify
        try:
            return pickle.loads(gzip.decompress(content))
        except Exception as exc:
            raise StorageCorrupt(f"{path}: cannot be read ({exc!r}). {_RESTORE_HINT}") from None
    if len(content) < _SNAPSHOT_HEADER.size:
        raise StorageCorrupt(f"{path}: truncated ({len(content)} bytes). {_RESTORE_HINT}")
    magic, length, crc = _SNAPSHOT_HEADER.unpack_from(content)
    payload = content[_SNAPSHOT_HEADER.size :]
    if magic != _SNAPSHOT_MAGIC:
        raise StorageCorrupt(
            f"{path}: not a cfs snapshot (header {content[:8]!r}). {_RESTORE_HINT}"
        )
    if len(payload) != length:
        raise StorageCorrupt(
            f"{path}: {len(payload)} payload bytes, the header says {length}. {_RESTORE_HINT}"
        )
    if zlib.crc32(payload) != crc:
        raise StorageCorrupt(f"{path}: the checksum does not match. {_RESTORE_HINT}")
    return pickle.loads(zlib.decompress(payload))


class SnapshotStore:
    """pysyncobj's Serializer interface (in-process, no fork) over a checksummed file.

    A snapshot written at log compaction, or received from the leader, is synced and renamed
    into place (and the directory synced) before pysyncobj drops the entries it covers or
    acknowledges it. A received snapshot that fails its checksum is discarded, not installed.
    """

    def __init__(self, path: Path, batch_size: int, condition: Condition, fsync: bool) -> None:
        self.path = path
        self._batch_size = batch_size
        self._condition = condition
        self._fsync = fsync
        self._outcome: tuple[int, int] | None = None  # (SERIALIZER_STATE, id) to report once
        self._transmissions: dict[Any, dict[str, Any]] = {}
        self._incoming: int | None = None  # fd of the snapshot being received
        self._incoming_size = 0
        if path.exists():
            decode_snapshot(path, path.read_bytes())  # refuse to start on a damaged one

    def checkSerializing(self) -> tuple[int, int | None]:
        if self._outcome is None:
            return SERIALIZER_STATE.NOT_SERIALIZING, None
        state, ident = self._outcome
        self._outcome = None
        return state, ident

    def serialize(self, data: Any, ident: int) -> None:
        try:
            _replace_file(self.path, encode_snapshot(data), self._fsync)
        except SyncFailed:
            raise
        except OSError as exc:
            if not _is_refusal(exc):
                raise
            self._condition.refused(self.path.name, exc)
            self._outcome = (SERIALIZER_STATE.FAILED, ident)
            return
        self._transmissions = {}
        self._outcome = (SERIALIZER_STATE.SUCCESS, ident)

    def deserialize(self) -> Any:
        return decode_snapshot(self.path, self.path.read_bytes())

    def getTransmissionData(self, transmissionID: Any) -> tuple[bytes, bool, bool] | None:
        transmission = self._transmissions.get(transmissionID)
        if transmission is None:
            try:
                content = self.path.read_bytes()
            except OSError:
                log.exception("Cannot read %s to send it", self.path)
                return None
            transmission = self._transmissions[transmissionID] = {"data": content, "sent": 0}
        sent = transmission["sent"]
        chunk = transmission["data"][sent : sent + self._batch_size]
        transmission["sent"] = sent + len(chunk)
        last = not chunk
        if last:
            del self._transmissions[transmissionID]
        return chunk, sent == 0, last

    def setTransmissionData(self, data: tuple[bytes, bool, bool] | None) -> bool:
        """Receive one chunk of the leader's snapshot; True once it is installed."""
        if data is None:
            return False
        chunk, first, last = data
        tmp = self.path.with_name(self.path.name + ".incoming")
        try:
            if first:
                self._close_incoming()
                self._incoming = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
                self._incoming_size = 0
            if self._incoming is None:
                return False
            _pwrite_all(self._incoming, chunk, self._incoming_size)
            self._incoming_size += len(chunk)
            if not last:
                return False
            _datasync(self._incoming, self._fsync, tmp)
            self._close_incoming()
        except SyncFailed:
            raise
        except OSError as exc:
            self._close_incoming()
            tmp.unlink(missing_ok=True)
            if _is_refusal(exc):
                self._condition.refused(tmp.name, exc)
                return False
            raise
        return self._install(tmp)

    def _install(self, tmp: Path) -> bool:
        try:
            decode_snapshot(tmp, tmp.read_bytes())
        except StorageCorrupt as exc:
            log.error("Discarded a snapshot received from the leader: %s", exc)
            tmp.unlink(missing_ok=True)
            return False
        os.replace(tmp, self.path)
        _sync_dir(self.path.parent, self._fsync)
        self._condition.wrote()
        return True

    def _close_incoming(self) -> None:
        if self._incoming is not None:
            os.close(self._incoming)
            self._incoming = None

    def cancelTransmisstion(self, transmissionID: Any) -> None:  # pysyncobj's spelling
        self._transmissions.pop(transmissionID, None)


# --------------------------------------------------------------------------- all of it


@dataclass
class Storage:
    """A node's Raft storage, opened and verified."""

    data_dir: Path
    journal: RaftJournal
    terms: TermStore
    snapshots: SnapshotStore
    condition: Condition

    @property
    def problem(self) -> str | None:
        """Why writes are refused now (disk full, I/O error), or None."""
        return self.condition.problem


def open_storage(data_dir: Path, fsync: bool = True, batch_size: int = 2**16) -> Storage:
    """Open (or create) the storage in ``data_dir``; StorageCorrupt if it cannot be trusted.

    The term file is created before the journal: a journal without one means it was lost, and
    the node might vote twice in a term, so that refuses to start rather than guess.
    """
    prepare_data_dir(data_dir)
    journal_path = data_dir / JOURNAL_FILE
    meta_path = data_dir / META_FILE
    legacy = [name for name in LEGACY_FILES if (data_dir / name).exists()]
    if legacy:
        raise StorageCorrupt(
            f"{data_dir} holds pysyncobj's unchecked journal format ({', '.join(legacy)}), "
            "which this release does not read. " + _RESTORE_HINT
        )
    if journal_path.exists() and not meta_path.exists():
        raise StorageCorrupt(
            f"{meta_path} is missing but {journal_path} exists: without the recorded vote this "
            f"node could vote twice in one term. {_RESTORE_HINT}"
        )
    condition = Condition()
    terms = TermStore(meta_path, condition, fsync)
    journal = RaftJournal(journal_path, terms, condition, fsync)
    snapshots = SnapshotStore(data_dir / SNAPSHOT_FILE, batch_size, condition, fsync)
    return Storage(data_dir, journal, terms, snapshots, condition)
