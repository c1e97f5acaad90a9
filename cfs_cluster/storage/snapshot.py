"""``raft.dump``: the snapshot pysyncobj writes at log compaction and sends to a member that
lacks the entries it covers, as one checksummed file (pysyncobj's ``Serializer`` interface)."""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any

from pysyncobj.config import SERIALIZER_STATE

from cfs_cluster.storage.files import (
    FILE_MODE,
    RESTORE_HINT,
    Condition,
    StorageCorrupt,
    SyncFailed,
    datasync,
    is_refusal,
    pwrite_all,
    replace_file,
    sync_dir,
)

__all__ = ["SnapshotStore", "decode_snapshot", "encode_snapshot"]

log = logging.getLogger("cfs.storage")

_SNAPSHOT_MAGIC = b"CFSSNAP1"
_SNAPSHOT_HEADER = struct.Struct("<8sQI")  # magic, payload length, crc32 of the payload
_GZIP_MAGIC = b"\x1f\x8b"  # pysyncobj's own snapshot format (and older `cfs restore` output)


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
            raise StorageCorrupt(f"{path}: cannot be read ({exc!r}). {RESTORE_HINT}") from None
    if len(content) < _SNAPSHOT_HEADER.size:
        raise StorageCorrupt(f"{path}: truncated ({len(content)} bytes). {RESTORE_HINT}")
    magic, length, crc = _SNAPSHOT_HEADER.unpack_from(content)
    payload = content[_SNAPSHOT_HEADER.size :]
    if magic != _SNAPSHOT_MAGIC:
        raise StorageCorrupt(f"{path}: not a cfs snapshot (header {content[:8]!r}). {RESTORE_HINT}")
    if len(payload) != length:
        raise StorageCorrupt(
            f"{path}: {len(payload)} payload bytes, the header says {length}. {RESTORE_HINT}"
        )
    if zlib.crc32(payload) != crc:
        raise StorageCorrupt(f"{path}: the checksum does not match. {RESTORE_HINT}")
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
            replace_file(self.path, encode_snapshot(data), self._fsync)
        except SyncFailed:
            raise
        except OSError as exc:
            if not is_refusal(exc):
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
                self._incoming = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
                self._incoming_size = 0
            if self._incoming is None:
                return False
            pwrite_all(self._incoming, chunk, self._incoming_size)
            self._incoming_size += len(chunk)
            if not last:
                return False
            datasync(self._incoming, self._fsync, tmp)
            self._close_incoming()
        except SyncFailed:
            raise
        except OSError as exc:
            self._close_incoming()
            tmp.unlink(missing_ok=True)
            if is_refusal(exc):
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
        sync_dir(self.path.parent, self._fsync)
        self._condition.wrote()
        return True

    def _close_incoming(self) -> None:
        if self._incoming is not None:
            os.close(self._incoming)
            self._incoming = None

    def cancelTransmisstion(self, transmissionID: Any) -> None:  # pysyncobj's spelling
        self._transmissions.pop(transmissionID, None)
