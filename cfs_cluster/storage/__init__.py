"""Crash-safe storage under Raft: log entries, term and vote, and the snapshot, on stable storage.

pysyncobj's own journal writes through ``mmap`` and never syncs, and its snapshot and term files
are renamed into place without a sync: a power loss can take back an acknowledged entry or a
vote. This package is the storage behind pysyncobj's ``Journal`` and ``Serializer`` interfaces
(``journal.py``, ``terms.py``, ``snapshot.py``, on ``files.py``; ``durable.py`` wires them
into pysyncobj) with three properties:

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
