"""``raft.meta``: the term, the vote and the commit index, synced before any message reflects
them (Raft's persistent state besides the log)."""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

from cfs_cluster.storage.files import (
    RESTORE_HINT,
    Condition,
    StorageCorrupt,
    datasync,
    is_refusal,
    pwrite_all,
    replace_file,
)

__all__ = ["TermStore"]

log = logging.getLogger("cfs.storage")

_META_MAGIC = b"CFSMETA1"
_META_SLOT_SIZE = 512
_META_SLOT = struct.Struct("<8sQQQH")  # magic, sequence, term, commit index, vote length
_META_MAX_VOTE = _META_SLOT_SIZE - _META_SLOT.size - 4


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
            replace_file(path, self._slot(0) + self._slot(1), fsync)
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
                f"them could vote twice in one term. {RESTORE_HINT}"
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
            pwrite_all(self._fd, self._slot(sequence), (sequence % 2) * _META_SLOT_SIZE)
        except OSError as exc:
            self.term, self.vote, self.commit_index = previous
            if not is_refusal(exc):
                raise
            raise self._condition.refused(self.path.name, exc) from exc
        datasync(self._fd, self._fsync, self.path)
        self._sequence = sequence

    def close(self) -> None:
        os.close(self._fd)
