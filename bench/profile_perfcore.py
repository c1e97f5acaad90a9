"""Profile the heartbeat path and the background cost in the production configuration.

A 3-node cluster (auth required with Basic credentials, a Raft password, fsynced storage) on
127.0.0.1; N sessions (N/2 groups × 2) at T = 15 s; an open-loop heartbeat schedule at a fixed
rate. Prints CPU per node (cores, from /proc/<pid>/stat over the measured window) and the
latency percentiles; with ``--profile DIR`` also a py-spy raw profile of every node.

    .venv/bin/python -m bench.profile_perfcore --sessions 20000 --rate 2667 --duration 30

``--code DIR`` runs the nodes from another source tree (e.g. an export of main) for a
before/after comparison in one run: ``git archive main | tar -x -C /tmp/base``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import httpload, systems

_ADMIN = "perf-admin"
_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def _with_auth(authorization: str) -> None:
    """Every request of httpload carries the Basic credentials (production configuration)."""
    plain = httpload.encode

    def encode(host: str, port: int, method: str, path: str, body: bytes) -> bytes:
        raw = plain(host, port, method, path, body)
        head, _, rest = raw.partition(b"\r\n")
        return head + f"\r\nAuthorization: {authorization}".encode() + b"\r\n" + rest

    httpload.encode = encode  # type: ignore[assignment]


def _cluster(base: Path, code: Path | None, password: str, dev: bool) -> systems.CfsCluster:
    env = {"CFS_RAFT_PASSWORD": secrets.token_urlsafe(24)}
    if not dev:
        env["CFS_BOOTSTRAP_ADMIN"] = f"{_ADMIN}:{password}"
    if code is not None:
        env["PYTHONPATH"] = str(code)
    cluster = systems.CfsCluster(base, env=env)
    if not dev:
        import httpx

        cluster.auth = httpx.BasicAuth(_ADMIN, password)
        cluster.client = httpx.Client(timeout=10, auth=cluster.auth)
    return cluster


def _gc_metrics(cluster: systems.CfsCluster, index: int) -> dict[str, float]:
    """The node's garbage-collector pauses (ops/gcpolicy.py; absent on older trees)."""
    text = cluster.client.get(cluster.nodes[index].url + "/metrics").text
    found = {}
    for line in text.splitlines():
        if line.startswith("cfs_gc_") and not line.startswith("cfs_gc_collections_created"):
            name, _, value = line.rpartition(" ")
            if "_created" not in name:
                found[name.replace("cfs_gc_", "")] = round(float(value), 3)
    return found


def _profile(pids: list[int], seconds: float, out: Path) -> list[subprocess.Popen[bytes]]:
    spy = str(Path(sys.executable).parent / "py-spy")
    procs = []
    for i, pid in enumerate(pids):
        cmd = [spy, "record", "--format", "raw", "--rate", "50", "--duration", str(int(seconds)),
               "--pid", str(pid), "--output", str(out / f"node{i}.txt"), "--threads"]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


def run(args: argparse.Namespace) -> dict[str, Any]:
    password = secrets.token_urlsafe(16)
    if not args.dev:
        token = base64.b64encode(f"{_ADMIN}:{password}".encode()).decode()
        _with_auth(f"Basic {token}")
    with tempfile.TemporaryDirectory(prefix="cfs-perf-") as tmp:
        # A node runs `python -m cfs_cluster` in this directory, which would come first on its
        # path: from the temporary one, PYTHONPATH (--code) decides which tree it runs.
        os.chdir(tmp)
        cluster = _cluster(Path(tmp), args.code, password, args.dev)
        with cluster:
            leader = cluster.leader_index()
            sessions, seconds = cluster.register(args.sessions // 2, args.timeout)
            requests = systems.heartbeat_requests(sessions)
            ports = [cluster.port(i) for i in range(3)]
            if args.target == "leader":
                targets = [("127.0.0.1", ports[leader])]
            elif args.target == "follower":
                targets = [("127.0.0.1", ports[cluster.follower_index(leader)])]
            else:
                targets = [("127.0.0.1", p) for p in ports]
            # Every session heard twice (the first heartbeats make each group's Raft-committed
            # promotions), then the open-loop warm-up: the measured window is steady state.
            host, port = targets[0]
            for _ in range(2):
                httpload.run(httpload.run_all(host, port, requests, 64))
            httpload.run(httpload.fixed_rate(targets, requests, args.rate, args.warmup, 48))
            pids = cluster.pids()
            spies = _profile(pids, args.duration, args.profile) if args.profile else []
            before = [_cpu_seconds(p) for p in pids]
            start = time.monotonic()
            result = httpload.run(
                httpload.fixed_rate(targets, requests, args.rate, args.duration, 48)
            )
            elapsed = time.monotonic() - start
            cpu = [(_cpu_seconds(p) - b) / elapsed for p, b in zip(pids, before, strict=True)]
            for spy in spies:
                spy.wait(timeout=args.duration + 60)
            assert isinstance(result, httpload.RateResult)
            summary = result.summary()
            gc_stats = [_gc_metrics(cluster, i) for i in range(3)]
            leader_after = cluster.leader_index()
            if args.profile:
                for i, node in enumerate(cluster.nodes):
                    shutil.copy(node.log_path, args.profile / f"node{i}.log")
            return {
                "code": str(args.code or "this tree"),
                "config": "dev (no auth)"
                if args.dev
                else "production (Basic auth, Raft password, fsync)",
                "sessions": len(sessions),
                "register_seconds": round(seconds, 1),
                "target": args.target,
                "leader": leader,
                "leader_after": leader_after,
                "cpu_cores": [round(c, 3) for c in cpu],
                "statuses": result.statuses,
                "gc": gc_stats,
                **summary,
            }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1333.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--timeout", default="00:00:15", help="FailoverTimeout of every group")
    parser.add_argument("--target", choices=["leader", "follower", "all"], default="all")
    parser.add_argument("--code", type=Path, help="source tree the nodes run (PYTHONPATH)")
    parser.add_argument("--profile", type=Path, help="directory for py-spy raw profiles")
    parser.add_argument("--dev", action="store_true", help="--dev, no auth (for comparison)")
    args = parser.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    print(json.dumps(run(args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
