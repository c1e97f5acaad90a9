"""Backups of the replicated state, and offline restore into a fresh data directory.

A backup is one file (format version 1)::

    CFS-BACKUP\\n                      magic line
    {"Format": 1, "Sha256": …, …}\\n   JSON header: format, checksum and size of the payload,
                                      node, Raft term and applied index, time, release
    <payload>                         gzip(pickle(engine.ClusterState))

The state is pickled while the replicator's lock is held, so the file is the state after exactly
one applied log prefix. Reading verifies magic, format, size and SHA-256 before it unpickles, and
unpickles only cfs_cluster classes (a backup is data, never code).

Restore writes the state as the node's snapshot (``raft.dump``, storage/snapshot.py's checksummed
format) into an *empty* data directory: the same tuple pysyncobj dumps at log compaction, with two no-op log
entries at term 0 that stand for the applied index. pysyncobj loads it on the node's first tick,
exactly as after a compaction, and a joining member that lacks those entries receives the dump
as a snapshot. Why offline rather than a replicated ``RestoreState`` command: see
docs/operations.md, "Backup, restore and disaster recovery".
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cfs_cluster import __version__, engine
from cfs_cluster.errors import BackupError
from cfs_cluster.storage.files import SNAPSHOT_FILE, prepare_data_dir
from cfs_cluster.storage.snapshot import decode_snapshot, encode_snapshot

__all__ = [
    "BACKUP_PATH",
    "FORMAT_VERSION",
    "Backup",
    "BackupInfo",
    "encode_backup",
    "read_backup",
    "seed_data_dir",
    "write_atomic",
]

BACKUP_PATH = "/api/v1/cluster/backup"
FORMAT_VERSION = 1
MAGIC = b"CFS-BACKUP\n"
_MAX_HEADER = 4096
# Files in a data directory that mean it already holds a Raft history (restore refuses).
RAFT_FILES = ("raft.journal", "raft.meta", "raft.journal.meta", "raft.dump")
_NO_OP = b"\x01"  # pysyncobj _COMMAND_TYPE.NO_OP, one byte
# Classes a backup may contain besides cfs_cluster's own (the restricted unpickler).
_ALLOWED_FOREIGN = {("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset")}


@dataclass(frozen=True)
class BackupInfo:
    """The header of a backup: where and when it was taken."""

    node: str
    term: int
    applied_index: int
    time: str  # ISO 8601 UTC
    software: str = __version__
    format: int = FORMAT_VERSION


@dataclass(frozen=True)
class Backup:
    info: BackupInfo
    state: engine.ClusterState

    def summary(self) -> str:
        groups = self.state.groups.values()
        return (
            f"backup of node {self.info.node} taken {self.info.time} (term {self.info.term}, "
            f"applied index {self.info.applied_index}, cfs {self.info.software}): "
            f"{len(self.state.groups)} groups, {sum(len(g.sessions) for g in groups)} sessions, "
            f"{len(self.state.users)} users, "
            f"{len(self.state.config.health_endpoints)} health endpoints"
        )


# --------------------------------------------------------------------------- file format


def encode_backup(state_pickle: bytes, info: BackupInfo) -> bytes:
    """The backup file for an already pickled ClusterState."""
    payload = gzip.compress(state_pickle, mtime=0)
    header = {
        "Format": info.format,
        "Node": info.node,
        "Term": info.term,
        "AppliedIndex": info.applied_index,
        "Time": info.time,
        "Software": info.software,
        "PayloadBytes": len(payload),
        "Sha256": hashlib.sha256(payload).hexdigest(),
    }
    return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload


def snapshot_info(node: str, term: int, applied_index: int, now: float) -> BackupInfo:
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return BackupInfo(node=node, term=term, applied_index=applied_index, time=stamp)


def read_backup(data: bytes) -> Backup:
    """Verify and decode a backup file; any defect is a BackupError naming it."""
    if not data.startswith(MAGIC):
        raise BackupError("The file is not a cfs backup (it does not start with CFS-BACKUP).")
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + _MAX_HEADER)
    if end < 0:
        raise BackupError("The backup header is truncated or malformed.")
    header = _header(data[len(MAGIC) : end])
    payload = data[end + 1 :]
    if len(payload) != header["PayloadBytes"]:
        raise BackupError(
            f"The backup is truncated or padded: {len(payload)} payload bytes, "
            f"the header says {header['PayloadBytes']}."
        )
    if hashlib.sha256(payload).hexdigest() != header["Sha256"]:
        raise BackupError("The backup's SHA-256 checksum does not match: the file is corrupt.")
    state = _load_state(payload)
    info = BackupInfo(
        node=str(header["Node"]),
        term=header["Term"],
        applied_index=header["AppliedIndex"],
        time=str(header["Time"]),
        software=str(header.get("Software", "?")),
        format=header["Format"],
    )
    return Backup(info, state)


def _header(raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw)
    except ValueError:
        raise BackupError("The backup header is not valid JSON.") from None
    if not isinstance(header, dict):
        raise BackupError("The backup header is not a JSON object.")
    if header.get("Format") != FORMAT_VERSION:
        raise BackupError(
            f"Backup format {header.get('Format')!r} is not supported; this release reads "
            f"format {FORMAT_VERSION}."
        )
    for key in ("PayloadBytes", "Term", "AppliedIndex"):
        if not isinstance(header.get(key), int) or header[key] < 0:
            raise BackupError(f"The backup header has no valid {key}.")
    if not isinstance(header.get("Sha256"), str):
        raise BackupError("The backup header has no Sha256.")
    return header


class _StateUnpickler(pickle.Unpickler):
    """Only cfs_cluster's own classes (and plain containers): never arbitrary callables."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "cfs_cluster" or module.startswith("cfs_cluster."):
            return super().find_class(module, name)
        if (module, name) in _ALLOWED_FOREIGN:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a backup")


def _load_state(payload: bytes) -> engine.ClusterState:
    try:
        state = _StateUnpickler(io.BytesIO(gzip.decompress(payload))).load()
    except (OSError, EOFError, zlib.error, pickle.UnpicklingError, AttributeError) as exc:
        raise BackupError(f"The backup's state cannot be decoded: {exc}") from None
    except Exception as exc:  # a crafted pickle can raise anything while it is built
        raise BackupError(f"The backup's state cannot be decoded: {type(exc).__name__}") from None
    if not isinstance(state, engine.ClusterState):
        raise BackupError("The backup does not contain a cluster state.")
    return state


# --------------------------------------------------------------------------- restore


def seed_data_dir(backup: Backup, data_dir: Path, raft: str, peers: tuple[str, ...]) -> Path:
    """Write ``raft.dump`` for a node that starts a new cluster from ``backup``.

    ``raft`` and ``peers`` are that node's ``--raft`` and ``--peers``: pysyncobj takes the
    membership from the dump, so they must be the new cluster's addresses.
    """
    if raft in peers:
        raise BackupError("--peers must list the *other* members, not this node's --raft.")
    present = [name for name in RAFT_FILES if (data_dir / name).exists()]
    if present:
        raise BackupError(
            f"{data_dir} already holds Raft data ({', '.join(present)}); restore only into an "
            "empty data directory (move the old one aside first)."
        )
    from pysyncobj.node import TCPNode  # the only pysyncobj use outside replication.py

    state = backup.state
    state.members = {}  # the old cluster's API URLs; new members publish their own
    state.opened_term = 0  # the new cluster's terms start again at 1
    # Two entries at term 0 (so currentTerm 0 >= last log term) standing for the applied index;
    # >= 2, so a member that joins with an empty journal (index 1) is sent this dump as a snapshot.
    index = max(2, backup.info.applied_index)
    consumer = {"state": state}
    own = {"_SyncObj__enabledCodeVersion": 0}
    cluster = {TCPNode(address) for address in (raft, *peers)}
    dump = ([own, consumer], (_NO_OP, index + 1, 0), (_NO_OP, index, 0), cluster)
    try:
        prepare_data_dir(data_dir)
    except OSError as exc:
        raise BackupError(f"Cannot create {data_dir}: {exc.strerror or exc}.") from None
    target = data_dir / SNAPSHOT_FILE
    write_atomic(target, encode_snapshot(dump))
    _check_dump(target, index + 1)
    return target


def write_atomic(path: Path, content: bytes) -> None:
    try:
        _replace_file(path, content)
    except OSError as exc:
        raise BackupError(f"Cannot write {path}: {exc.strerror or exc}.") from None


def _replace_file(path: Path, content: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp-cfs")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _check_dump(path: Path, last_index: int) -> None:
    """Read the snapshot back the way the node will."""
    data = decode_snapshot(path, path.read_bytes())
    ok = (
        isinstance(data, tuple)
        and len(data) == 4
        and isinstance(data[0][1]["state"], engine.ClusterState)
        and data[1][1] == last_index
    )
    if not ok:
        path.unlink()
        raise BackupError(f"{path} did not read back as a snapshot; nothing was restored.")
