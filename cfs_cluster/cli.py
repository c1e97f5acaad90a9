"""The `cfs` command: parse arguments, build Settings, call the library. Nothing else."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .clustercli import add_cluster_parser, cluster_command
from .errors import BadRequest
from .settings import (
    DEFAULT_API_PORT,
    DEFAULT_RAFT_PORT,
    FailoverSettings,
    RaftSettings,
    SecuritySettings,
    Settings,
    parse_address,
)
from .usercli import add_users_parser, users_command

__all__ = ["main"]


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run one cluster node")
    p.add_argument("--node-id", default=_env("CFS_NODE_ID"), help="unique member id [CFS_NODE_ID]")
    p.add_argument(
        "--api",
        default=_env("CFS_API", f"127.0.0.1:{DEFAULT_API_PORT}"),
        help="HOST:PORT of the REST API [CFS_API]",
    )
    p.add_argument(
        "--raft",
        default=_env("CFS_RAFT", f"127.0.0.1:{DEFAULT_RAFT_PORT}"),
        help="HOST:PORT for Raft [CFS_RAFT]",
    )
    p.add_argument(
        "--peers",
        default=_env("CFS_PEERS", ""),
        help="other members' Raft HOST:PORT, comma-separated [CFS_PEERS]",
    )
    p.add_argument(
        "--data-dir",
        default=_env("CFS_DATA_DIR", "./cfs-data"),
        help="journal and snapshot directory [CFS_DATA_DIR]",
    )
    p.add_argument(
        "--raft-password",
        default=_env("CFS_RAFT_PASSWORD"),
        help="cluster secret encrypting Raft traffic [CFS_RAFT_PASSWORD]",
    )
    p.add_argument(
        "--advertise-url",
        default=_env("CFS_ADVERTISE_URL"),
        help="API URL other members use to reach this node [CFS_ADVERTISE_URL]",
    )
    p.add_argument(
        "--dev",
        action="store_true",
        default=_env("CFS_DEV") == "1",
        help="allow running without a Raft password (local test clusters only)",
    )
    p.add_argument(
        "--log-level",
        default=_env("CFS_LOG_LEVEL", "information"),
        help="Verbose|Debug|Information|Warning|Error|Fatal [CFS_LOG_LEVEL]",
    )
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=_env("CFS_LOG_FORMAT", "text"),
        help="[CFS_LOG_FORMAT]",
    )
    p.add_argument(
        "--election-timeout",
        type=float,
        default=float(_env("CFS_ELECTION_TIMEOUT", "0.5") or 0.5),
        help="Raft minimum election timeout, seconds [CFS_ELECTION_TIMEOUT]",
    )
    _security_arguments(p)
    p.add_argument(
        "--health-interval",
        type=float,
        default=float(_env("CFS_HEALTH_INTERVAL", "60") or 60),
        help="seconds between OMF health messages [CFS_HEALTH_INTERVAL]",
    )
    p.add_argument(
        "--cluster-name",
        default=_env("CFS_CLUSTER_NAME", "cfs"),
        help="name of the cluster's element in PI [CFS_CLUSTER_NAME]",
    )
    p.add_argument(
        "--leader-fallback",
        type=float,
        default=float(_env("CFS_LEADER_FALLBACK", "1.0") or 1.0),
        help="seconds a leader keeps leading without a majority [CFS_LEADER_FALLBACK]",
    )


def _security_arguments(p: argparse.ArgumentParser) -> None:
    """Auth, TLS and rate limits (docs/security.md). The bootstrap password is env-only."""
    p.add_argument(
        "--auth",
        choices=("auto", "required"),
        default=_env("CFS_AUTH", "auto"),
        help="auto: enforce once a user exists; required: always [CFS_AUTH]",
    )
    p.add_argument(
        "--tls-cert", default=_env("CFS_TLS_CERT"), help="PEM certificate for HTTPS [CFS_TLS_CERT]"
    )
    p.add_argument(
        "--tls-key", default=_env("CFS_TLS_KEY"), help="PEM private key for HTTPS [CFS_TLS_KEY]"
    )
    p.add_argument(
        "--tls",
        choices=("off", "self-signed"),
        default=_env("CFS_TLS", "off"),
        help="self-signed: generate a certificate in the data dir [CFS_TLS]",
    )
    p.add_argument(
        "--heartbeat-rate-limit",
        type=float,
        default=float(_env("CFS_HEARTBEAT_RATE_LIMIT", "0") or 0),
        help="minimum seconds between a session's heartbeats, after a burst of 10; 0 = off [CFS_HEARTBEAT_RATE_LIMIT]",
    )


def _security_settings(args: argparse.Namespace) -> SecuritySettings:
    return SecuritySettings(
        auth=args.auth,
        bootstrap_admin=_env("CFS_BOOTSTRAP_ADMIN") or None,
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
        tls_self_signed=args.tls == "self-signed",
    )


def _dev_cluster_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dev-cluster", help="run a local cluster on 127.0.0.1 for trying it out")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--data-dir", default=".cfs-data")
    p.add_argument("--api-port", type=int, default=DEFAULT_API_PORT)
    p.add_argument("--raft-port", type=int, default=DEFAULT_RAFT_PORT)


def build_settings(args: argparse.Namespace) -> Settings:
    if not args.node_id:
        raise BadRequest("--node-id (or CFS_NODE_ID) is required.")
    api_host, api_port = parse_address(args.api, DEFAULT_API_PORT)
    raft_host, raft_port = parse_address(args.raft, DEFAULT_RAFT_PORT)
    peers = tuple(
        "{}:{}".format(*parse_address(p, DEFAULT_RAFT_PORT))
        for p in args.peers.split(",")
        if p.strip()
    )
    minimum = args.election_timeout
    settings = Settings(
        node_id=args.node_id,
        api_host=api_host,
        api_port=api_port,
        raft_address=f"{raft_host}:{raft_port}",
        peers=peers,
        data_dir=Path(args.data_dir),
        raft_password=args.raft_password or None,
        dev=args.dev,
        advertise_url=args.advertise_url,
        raft=RaftSettings(
            min_timeout=minimum,
            max_timeout=2 * minimum,
            append_entries_period=min(0.05, minimum / 4),
            leader_fallback=args.leader_fallback,
        ),
        log_level=args.log_level,
        health_interval=args.health_interval,
        cluster_name=args.cluster_name,
        security=_security_settings(args),
        failover=FailoverSettings(heartbeat_rate_limit=args.heartbeat_rate_limit),
    )
    settings.validate()
    return settings


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .api import create_app
    from .logs import setup_logging
    from .node import Node

    settings = build_settings(args)
    setup_logging(settings.log_level, args.log_format)
    node = Node(settings)
    config = uvicorn.Config(
        create_app(node),
        host=settings.api_host,
        port=settings.api_port,
        access_log=False,
        log_config=None,
        lifespan="on",
        timeout_keep_alive=75,
        timeout_graceful_shutdown=5,
    )
    pair = _tls_files(settings)
    if pair is not None:
        config.ssl_certfile, config.ssl_keyfile = str(pair[0]), str(pair[1])
    uvicorn.Server(config).run()
    return 0


def _tls_files(settings: Settings) -> tuple[Path, Path] | None:
    from .tls import certificate_files

    return certificate_files(settings)


def dev_cluster(args: argparse.Namespace) -> int:
    """Start N `cfs serve --dev` processes and stop them (by PID) on Ctrl-C."""
    n = args.nodes
    rafts = [f"127.0.0.1:{args.raft_port + i}" for i in range(n)]
    procs: list[subprocess.Popen[bytes]] = []
    for i in range(n):
        cmd = [
            sys.executable, "-m", "cfs_cluster", "serve", "--dev",
            "--node-id", f"n{i + 1}",
            "--api", f"127.0.0.1:{args.api_port + i}",
            "--raft", rafts[i],
            "--peers", ",".join(r for j, r in enumerate(rafts) if j != i),
            "--data-dir", str(Path(args.data_dir) / f"n{i + 1}"),
        ]  # fmt: skip
        procs.append(subprocess.Popen(cmd))
    urls = [f"http://127.0.0.1:{args.api_port + i}" for i in range(n)]
    print(f"cfs dev-cluster: {n} nodes starting (data in {args.data_dir}/)", flush=True)
    for i, url in enumerate(urls):
        print(f"  n{i + 1}: {url}   raft {rafts[i]}   pid {procs[i].pid}", flush=True)
    print(f"Try:  curl -s {urls[0]}/api/v1/cluster", flush=True)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cfs", description="Highly available Client Failover Service"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _dev_cluster_parser(sub)
    add_users_parser(sub)
    add_cluster_parser(sub)
    args = parser.parse_args(argv)
    try:
        if args.command == "users":
            return users_command(args)
        if args.command == "cluster":
            return cluster_command(args)
        if args.command == "serve":
            return serve(args)
        return dev_cluster(args)
    except BadRequest as exc:
        print(f"cfs: {exc.reason}", file=sys.stderr)
        return 2
