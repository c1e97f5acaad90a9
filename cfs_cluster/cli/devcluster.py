"""`cfs dev-cluster`: N `cfs serve --dev` nodes on loopback, for trying the service out."""

from __future__ import annotations

import argparse
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from cfs_cluster.settings import (
    DEFAULT_API_PORT,
    DEFAULT_RAFT_PORT,
    default_auth,
    env,
    environment,
)

__all__ = ["dev_cluster", "dev_cluster_parser"]


def dev_cluster_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dev-cluster", help="run a local cluster on 127.0.0.1 for trying it out")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--data-dir", default=".cfs-data")
    p.add_argument("--api-port", type=int, default=DEFAULT_API_PORT)
    p.add_argument("--raft-port", type=int, default=DEFAULT_RAFT_PORT)


def dev_cluster(args: argparse.Namespace) -> int:
    """Start N `cfs serve --dev` processes on loopback and stop them (by PID) on Ctrl-C.

    The nodes share a Raft secret generated for this run, handed over in their environment
    (not argv: that shows in `ps`), so no other local process can join or feed their Raft port.
    """
    n = args.nodes
    rafts = [f"127.0.0.1:{args.raft_port + i}" for i in range(n)]
    bootstrap_admin = env("CFS_BOOTSTRAP_ADMIN") or None
    auth = default_auth(True, bootstrap_admin)
    child_env = {**environment(), "CFS_RAFT_PASSWORD": secrets.token_urlsafe(32)}
    procs: list[subprocess.Popen[bytes]] = []
    for i in range(n):
        cmd = [
            sys.executable, "-m", "cfs_cluster", "serve", "--dev", "--auth", auth,
            "--node-id", f"n{i + 1}",
            "--api", f"127.0.0.1:{args.api_port + i}",
            "--raft", rafts[i],
            "--peers", ",".join(r for j, r in enumerate(rafts) if j != i),
            "--data-dir", str(Path(args.data_dir) / f"n{i + 1}"),
        ]  # fmt: skip
        procs.append(subprocess.Popen(cmd, env=child_env))
    urls = [f"http://127.0.0.1:{args.api_port + i}" for i in range(n)]
    print(f"cfs dev-cluster: {n} nodes starting (data in {args.data_dir}/)", flush=True)
    for i, url in enumerate(urls):
        print(f"  n{i + 1}: {url}   raft {rafts[i]}   pid {procs[i].pid}", flush=True)
    print("Raft: encrypted with a random secret generated for this run.", flush=True)
    if bootstrap_admin is None:
        print(
            "Auth: OFF - the API is open to every process on this machine (loopback only).",
            flush=True,
        )
        print(f"Try:  curl -s {urls[0]}/api/v1/cluster", flush=True)
    else:
        name = bootstrap_admin.partition(":")[0]
        print(f"Auth: required - administrator '{name}' from CFS_BOOTSTRAP_ADMIN.", flush=True)
        print(f"Try:  curl -s -u {name}:<password> {urls[0]}/api/v1/cluster", flush=True)
    print("Press Ctrl-C to stop every node.", flush=True)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while not stopping and all(p.poll() is None for p in procs):
        time.sleep(0.2)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
    return 0
