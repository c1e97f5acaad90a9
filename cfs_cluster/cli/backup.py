"""`cfs backup` and `cfs restore`: fetch a backup over the API; seed data directories from one offline."""

from __future__ import annotations

import argparse
from pathlib import Path

from cfs_cluster.cli.connect import connection
from cfs_cluster.cli.output import progress, progress_done
from cfs_cluster.errors import BackupError
from cfs_cluster.ops.backup import (
    BACKUP_PATH,
    read_backup,
    seed_data_dir,
    write_atomic,
)
from cfs_cluster.settings import DEFAULT_RAFT_PORT, env, parse_address

__all__ = ["add_backup_arguments", "backup_command", "restore_command"]


def add_backup_arguments(backup: argparse.ArgumentParser, restore: argparse.ArgumentParser) -> None:
    """Arguments of `cfs backup` (connection arguments added by the caller) and `cfs restore`."""
    backup.add_argument("--out", required=True, help="file to write (mode 0600; holds secrets)")
    restore.add_argument(
        "--in", dest="in_file", required=True, help="backup file written by `cfs backup`"
    )
    restore.add_argument(
        "--check", action="store_true", help="only verify the file and print what it holds"
    )
    restore.add_argument(
        "--data-dir",
        default=env("CFS_DATA_DIR"),
        help="the new node's EMPTY data directory [CFS_DATA_DIR]",
    )
    restore.add_argument(
        "--raft",
        default=env("CFS_RAFT"),
        help="the new node's Raft HOST:PORT, exactly as given to `cfs serve --raft` [CFS_RAFT]",
    )
    restore.add_argument(
        "--peers",
        default=env("CFS_PEERS", ""),
        help="the other new members' Raft HOST:PORT, as given to `cfs serve --peers`; "
        "empty = a one-node cluster to grow with `cfs cluster add-node` [CFS_PEERS]",
    )


def backup_command(args: argparse.Namespace) -> int:
    """`cfs backup`: fetch, verify, write atomically."""
    with connection(args, timeout=60) as conn:
        content = conn.download(BACKUP_PATH, f"cfs backup: downloading from {conn.url}")
    backup = read_backup(content)  # a damaged transfer never becomes a file
    out = Path(args.out)
    write_atomic(out, content)
    print(f"Wrote {out} ({len(content)} bytes): {backup.summary()}")
    return 0


def restore_command(args: argparse.Namespace) -> int:
    """`cfs restore`: verify a backup and seed one node's empty data directory from it."""
    progress(f"cfs restore: reading and verifying {args.in_file}")
    try:
        data = Path(args.in_file).read_bytes()
        backup = read_backup(data)
    except OSError as exc:
        raise BackupError(f"Cannot read {args.in_file}: {exc.strerror}.") from None
    finally:
        progress_done()
    if args.check:
        print(f"OK: {backup.summary()}")
        return 0
    if not args.data_dir or not args.raft:
        raise BackupError("--data-dir and --raft are required (or use --check).")
    raft = "{}:{}".format(*parse_address(args.raft, DEFAULT_RAFT_PORT))
    peers = tuple(
        "{}:{}".format(*parse_address(p, DEFAULT_RAFT_PORT))
        for p in args.peers.split(",")
        if p.strip()
    )
    progress(f"cfs restore: writing the snapshot into {args.data_dir}")
    try:
        target = seed_data_dir(backup, Path(args.data_dir), raft, peers)
    finally:
        progress_done()
    print(f"Restored {backup.summary()}")
    if peers:
        print(f"into {target}. Start it with: cfs serve --raft {raft} --peers {','.join(peers)}")
    else:
        print(
            f"into {target}. Start it alone (no --peers) with: cfs serve --raft {raft}; then "
            "start each other member with an empty data dir and add it: cfs cluster add-node"
        )
    return 0
