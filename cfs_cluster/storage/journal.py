"""``raft.journal``: the Raft log as an append-only file of checksummed records, and
``open_storage``, which opens and verifies a node's three stores (journal, terms.py,
snapshot.py) together. How the whole storage is durable: the storage package's docstring.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pysyncobj.journal import Journal

from cfs_cluster.storage.files import (
    JOURNAL_FILE,
    LEGACY_FILES,
    META_FILE,
    RESTORE_HINT,
    SNAPSHOT_FILE,
    Condition,
    StorageCorrupt,
    SyncFailed,
    WriteRefused,
    datasync,
    is_refusal,
    prepare_data_dir,
    pwrite_all,
    replace_file,
)
from cfs_cluster.storage.snapshot import SnapshotStore
from cfs_cluster.storage.terms import TermStore

__all__ = ["Entry", "RaftJournal", "Storage", "open_storage"]

log = logging.getLogger("cfs.storage")

Entry = tuple[bytes, int, int]  # pysyncobj's (command, index, term)

_JOURNAL_MAGIC = b"CFSRAFTJ"
_JOURNAL_HEADER = struct.Struct("<8sII")  # magic, format version, reserved
_JOURNAL_VERSION = 1
_RECORD_MARK = b"\xc5\xf5\x10\x9e"  # starts every record: lets a scan find records past damage
_RECORD = struct.Struct("<4sIIQQ")  # mark, payload length, crc32, index, term
_MAX_PAYLOAD = 64 << 20  # far above any command; a larger length field is damage


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
        raise StorageCorrupt(f"{path}: the header is truncated ({len(data)} bytes). {RESTORE_HINT}")
    if data[: _JOURNAL_HEADER.size] != _journal_header():
        raise StorageCorrupt(
            f"{path}: not a cfs journal of format {_JOURNAL_VERSION} (header {data[:12]!r}). "
            + RESTORE_HINT
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
                f"index {entries[-1][1]} term {entries[-1][2]}. {RESTORE_HINT}"
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
                + RESTORE_HINT
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
            replace_file(path, _journal_header(), fsync)
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
        datasync(self._fd, self._fsync, self.path)

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
            pwrite_all(self._fd, record, self._size)
        except OSError as exc:
            self._undo_partial_write()
            if not is_refusal(exc):
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
            replace_file(self.path, header + b"".join(records), self._fsync)
        except SyncFailed:
            raise
        except OSError as exc:
            if not is_refusal(exc):
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
            datasync(self._fd, self._fsync, self.path)
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
        datasync(self._fd, self._fsync, self.path)
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
            "which this release does not read. " + RESTORE_HINT
        )
    if journal_path.exists() and not meta_path.exists():
        raise StorageCorrupt(
            f"{meta_path} is missing but {journal_path} exists: without the recorded vote this "
            f"node could vote twice in one term. {RESTORE_HINT}"
        )
    condition = Condition()
    terms = TermStore(meta_path, condition, fsync)
    journal = RaftJournal(journal_path, terms, condition, fsync)
    snapshots = SnapshotStore(data_dir / SNAPSHOT_FILE, batch_size, condition, fsync)
    return Storage(data_dir, journal, terms, snapshots, condition)
