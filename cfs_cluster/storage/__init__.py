"""Crash-safe storage under Raft: the checksummed, fsynced journal, term/vote metadata and
snapshot (journal.py), and the pysyncobj subclass that syncs before it acknowledges (durable.py)."""
