"""The durable journal (cfs_cluster/storage/) at unit level: checksums, torn tails, bit flips
at random offsets, refused writes, the two-slot term file, the snapshot, file modes.

The node-level counterparts (a real `cfs serve` restarted on a damaged journal, a full disk,
fsync counted under strace, power loss under FUSE) are in tests/test_storage.py.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import struct
from pathlib import Path

import pytest
from pysyncobj.config import SERIALIZER_STATE

from cfs_cluster.storage import files, journal
from cfs_cluster.storage.files import StorageCorrupt, WriteRefused
from cfs_cluster.storage.journal import open_storage

HEADER = 16  # journal file header
RECORD = 28  # record header: mark, length, crc, index, term


def entries(count: int, start: int = 1, term: int = 1) -> list[journal.Entry]:
    return [(b"\x00" + f"command {i}".encode() * (i % 4 + 1), i, term) for i in range(start, start + count)]  # fmt: skip


def written(path: Path, items: list[journal.Entry], fsync: bool = False) -> journal.Storage:
    storage = open_storage(path, fsync=fsync)
    for entry in items:
        storage.journal.add(*entry)
    storage.journal.sync()
    return storage


def reopen(path: Path) -> list[journal.Entry]:
    storage = open_storage(path, fsync=False)
    return list(storage.journal[:])


def test_entries_term_vote_and_commit_survive_a_reopen(tmp_path: Path) -> None:
    items = entries(20)
    storage = written(tmp_path, items)
    storage.journal.setCurrentTerm(7, "127.0.0.1:5690")
    storage.journal.setRaftCommitIndex(15)
    storage.journal.onOneSecondTimer()
    again = open_storage(tmp_path, fsync=False)
    assert list(again.journal[:]) == items
    assert again.journal.getCurrentTerm() == 7
    assert again.journal.getVotedForNodeId() == "127.0.0.1:5690"
    assert again.journal.getRaftCommitIndex() == 15


def test_files_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    written(data, entries(3)).snapshots.serialize(("state", (b"\x01", 3, 1), (b"\x01", 2, 1), set()), 2)  # fmt: skip
    assert data.stat().st_mode & 0o777 == 0o700
    for name in (files.JOURNAL_FILE, files.META_FILE, files.SNAPSHOT_FILE):
        assert (data / name).stat().st_mode & 0o777 == 0o600, name


def test_an_existing_open_data_directory_is_tightened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    open_storage(data, fsync=False)
    assert data.stat().st_mode & 0o777 == 0o700


def test_a_torn_tail_is_cut_reported_and_the_rest_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    items = entries(10)
    written(tmp_path, items)
    path = tmp_path / files.JOURNAL_FILE
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size - 5)  # the last record lost its last 5 bytes
    with caplog.at_level(logging.WARNING, logger="cfs.storage"):
        assert reopen(tmp_path) == items[:-1]
    message = caplog.text
    assert str(path) in message and "dropped a torn or corrupt tail" in message
    last_offset = size - (RECORD + len(items[-1][0]))
    assert f"of {size - 5 - last_offset} bytes at offset {last_offset}" in message
    assert path.stat().st_size == last_offset  # cut on disk, not only skipped
    assert reopen(tmp_path) == items[:-1]


@pytest.mark.parametrize("seed", range(300))
def test_random_truncation_recovers_a_prefix(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    items = entries(rng.randint(1, 12))
    written(tmp_path, items)
    path = tmp_path / files.JOURNAL_FILE
    data = path.read_bytes()
    cut = rng.randint(HEADER, len(data))
    path.write_bytes(data[:cut] + bytes(rng.randrange(256) for _ in range(rng.choice([0, 0, 3, 40]))))  # fmt: skip
    try:
        recovered = reopen(tmp_path)
    except StorageCorrupt as exc:
        # Garbage that happens to hold a record mark followed by a valid record is
        # practically impossible; refusing would still be safe, but it must not happen here.
        pytest.fail(f"a torn tail was refused: {exc}")
    assert recovered == items[: len(recovered)]
    whole = sum(1 for offset in _record_ends(items) if offset <= cut)
    assert len(recovered) == whole


def _record_ends(items: list[journal.Entry]) -> list[int]:
    ends, offset = [], HEADER
    for command, _index, _term in items:
        offset += RECORD + len(command)
        ends.append(offset)
    return ends


@pytest.mark.parametrize("seed", range(300))
def test_a_flipped_bit_anywhere_is_cut_as_a_tail_or_refused(tmp_path: Path, seed: int) -> None:
    """Never garbage, never silence: a prefix with the damaged tail record dropped, or a
    refusal naming the file when intact records follow the damage."""
    rng = random.Random(seed)
    items = entries(rng.randint(2, 12))
    written(tmp_path, items)
    path = tmp_path / files.JOURNAL_FILE
    data = bytearray(path.read_bytes())
    offset = rng.randrange(len(data))
    data[offset] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))
    ends = _record_ends(items)
    try:
        recovered = reopen(tmp_path)
    except StorageCorrupt as exc:
        assert str(path) in str(exc) and "empty one" in str(exc)
        assert offset < ends[-2] or offset < HEADER  # damage before the last record
        return
    assert offset >= ends[-2], "damage before the last record must not load"
    assert recovered == items[:-1]


def test_damage_in_the_middle_refuses_with_the_file_and_what_to_do(tmp_path: Path) -> None:
    items = entries(10)
    written(tmp_path, items)
    path = tmp_path / files.JOURNAL_FILE
    data = bytearray(path.read_bytes())
    data[_record_ends(items)[3] + RECORD + 2] ^= 0xFF  # a payload byte of entry 5
    path.write_bytes(bytes(data))
    with pytest.raises(StorageCorrupt, match="intact records follow") as caught:
        reopen(tmp_path)
    assert str(path) in str(caught.value) and "Restoring one node from its peers" in str(caught.value)  # fmt: skip


def test_a_damaged_length_field_is_not_a_silent_short_log(tmp_path: Path) -> None:
    """pysyncobj's journal loaded 1 of 5 entries from a bad length field, and said nothing."""
    items = entries(5)
    written(tmp_path, items)
    path = tmp_path / files.JOURNAL_FILE
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, HEADER + 4, 3)  # entry 1's payload length
    path.write_bytes(bytes(data))
    with pytest.raises(StorageCorrupt):
        reopen(tmp_path)


def test_a_valid_record_out_of_sequence_is_refused(tmp_path: Path) -> None:
    written(tmp_path, [*entries(3), (b"\x00x", 9, 1)])
    with pytest.raises(StorageCorrupt, match="index 9"):
        reopen(tmp_path)


def test_a_journal_without_its_term_file_is_refused(tmp_path: Path) -> None:
    written(tmp_path, entries(3))
    (tmp_path / files.META_FILE).unlink()
    with pytest.raises(StorageCorrupt, match="vote twice"):
        reopen(tmp_path)


def test_pysyncobjs_old_format_is_refused_not_misread(tmp_path: Path) -> None:
    (tmp_path / files.JOURNAL_FILE).write_bytes(b"PYSYNCOBJ" + b"\0" * 31)
    (tmp_path / "raft.journal.meta").write_bytes(b"")
    with pytest.raises(StorageCorrupt, match="unchecked journal format"):
        reopen(tmp_path)


def test_a_re_sent_overlap_stays_on_disk_and_a_conflict_is_cut(tmp_path: Path) -> None:
    items = entries(6)
    storage = written(tmp_path, items)
    path = tmp_path / files.JOURNAL_FILE
    before = path.read_bytes()
    storage.journal.deleteEntriesFrom(3)  # pysyncobj does this for every overlapping resend
    for entry in items[3:]:
        storage.journal.add(*entry)
    assert not storage.journal.dirty and path.read_bytes() == before
    storage.journal.deleteEntriesFrom(4)
    storage.journal.add(b"\x00other", 5, 2)
    storage.journal.sync()
    expected = [*items[:4], (b"\x00other", 5, 2)]
    assert list(storage.journal[:]) == expected == reopen(tmp_path)


def test_a_pending_cut_is_made_at_the_next_sync(tmp_path: Path) -> None:
    storage = written(tmp_path, entries(6))
    storage.journal.deleteEntriesFrom(2)
    assert storage.journal.dirty
    storage.journal.sync()
    assert reopen(tmp_path) == entries(2)


def test_compaction_rewrites_the_journal_with_the_rest(tmp_path: Path) -> None:
    items = entries(10)
    storage = written(tmp_path, items)
    storage.journal.deleteEntriesTo(7)
    storage.journal.add(b"\x00next", 11, 1)
    storage.journal.sync()
    assert reopen(tmp_path) == [*items[7:], (b"\x00next", 11, 1)]
    assert not (tmp_path / (files.JOURNAL_FILE + ".tmp")).exists()


def test_clear_then_add(tmp_path: Path) -> None:
    storage = written(tmp_path, entries(4))
    storage.journal.clear()
    storage.journal.add(b"\x01", 40, 3)
    storage.journal.add(b"\x01", 41, 3)
    storage.journal.sync()
    assert reopen(tmp_path) == [(b"\x01", 40, 3), (b"\x01", 41, 3)]


def _refuse_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "pwrite", full)


def test_a_refused_append_changes_nothing_and_clears_when_space_is_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = entries(3)
    storage = written(tmp_path, items)
    path = tmp_path / files.JOURNAL_FILE
    before = path.read_bytes()
    seen: list[str | None] = []
    storage.condition.listeners.append(seen.append)
    with monkeypatch.context() as patch:
        _refuse_writes(patch)
        with pytest.raises(WriteRefused, match="No space left"):
            storage.journal.add(b"\x00late", 4, 1)
        assert storage.problem is not None and "raft.journal" in storage.problem
        with pytest.raises(WriteRefused):
            storage.journal.setCurrentTerm(2, None)
        assert storage.journal.getCurrentTerm() == 0  # not changed in memory either
    assert len(storage.journal) == 3 and path.read_bytes() == before
    storage.journal.add(b"\x00late", 4, 1)
    assert storage.problem is None
    assert len(seen) == 2 and "No space left" in str(seen[0]) and seen[1] is None


def test_the_term_file_survives_a_torn_slot_and_refuses_two(tmp_path: Path) -> None:
    storage = written(tmp_path, entries(1))
    storage.journal.setCurrentTerm(3, "a:1")  # sequence 2: slot 0 (creation wrote 0 and 1)
    storage.journal.setCurrentTerm(4, "b:2")  # sequence 3: slot 1, the newest
    path = tmp_path / files.META_FILE
    data = bytearray(path.read_bytes())
    newest = 1
    data[newest * 512 + 20] ^= 0x40
    path.write_bytes(bytes(data))
    again = open_storage(tmp_path, fsync=False)
    assert (again.journal.getCurrentTerm(), again.journal.getVotedForNodeId()) == (3, "a:1")
    data[(1 - newest) * 512 + 20] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(StorageCorrupt, match="both copies"):
        open_storage(tmp_path, fsync=False)


SNAPSHOT = ({"state": 1}, (b"\x01", 9, 2), (b"\x01", 8, 2), {"n1"})


def test_snapshot_round_trip_and_damage(tmp_path: Path) -> None:
    storage = written(tmp_path, entries(2))
    storage.snapshots.serialize(SNAPSHOT, 8)
    assert storage.snapshots.checkSerializing()[0] == SERIALIZER_STATE.SUCCESS
    assert open_storage(tmp_path, fsync=False).snapshots.deserialize() == SNAPSHOT
    path = tmp_path / files.SNAPSHOT_FILE
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(StorageCorrupt, match="checksum"):
        open_storage(tmp_path, fsync=False)


def test_a_received_snapshot_is_installed_only_when_intact(tmp_path: Path) -> None:
    sender = written(tmp_path / "leader", entries(2))
    sender.snapshots.serialize(SNAPSHOT, 8)
    receiver = written(tmp_path / "follower", entries(1))

    def transfer(damage: bool) -> bool:
        done = False
        while True:
            chunk = sender.snapshots.getTransmissionData("f")
            assert chunk is not None
            data, first, last = chunk
            if damage and first:
                data = data[:-1] + bytes([data[-1] ^ 1])
            done = receiver.snapshots.setTransmissionData((data, first, last))
            if last:
                return done

    assert transfer(damage=True) is False
    assert not (tmp_path / "follower" / files.SNAPSHOT_FILE).exists()
    assert transfer(damage=False) is True
    assert receiver.snapshots.deserialize() == SNAPSHOT


def test_record_checksum_covers_index_and_term(tmp_path: Path) -> None:
    written(tmp_path, entries(3))
    path = tmp_path / files.JOURNAL_FILE
    data = bytearray(path.read_bytes())
    offset = _record_ends(entries(3))[1]  # the last record's header
    struct.pack_into("<Q", data, offset + 20, 5)  # its term
    path.write_bytes(bytes(data))
    assert reopen(tmp_path) == entries(2)
