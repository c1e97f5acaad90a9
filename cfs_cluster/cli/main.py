"""The `cfs` command: parse arguments, build Settings, call the library. Nothing else."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from cfs_cluster import __version__
from cfs_cluster.cli.cluster import add_cluster_parser, cluster_command
from cfs_cluster.cli.connect import CliError, add_connection_arguments
from cfs_cluster.cli.domain import DOMAIN_COMMANDS, add_domain_parsers, domain_command
from cfs_cluster.cli.identity import add_identity_parsers, identity_command
from cfs_cluster.cli.users import add_users_parser, users_command
from cfs_cluster.errors import BadRequest
from cfs_cluster.settings import (
    DEFAULT_API_PORT,
    DEFAULT_RAFT_PORT,
    FailoverSettings,
    RaftSettings,
    SecuritySettings,
    Settings,
    default_auth,
    env,
    env_flag,
    env_float,
    env_int,
    environment,
    parse_address,
)

__all__ = ["EXIT_STORAGE_CORRUPT", "main"]

EXIT_STORAGE_CORRUPT = 65  # EX_DATAERR: a data file is damaged; restore the node from a peer


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each default, except none at all and the Raft password (it may come from the
    environment: --help must not print it)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        unset = action.default is None or action.default is False or action.default == ""
        if unset or action.dest == "raft_password":
            return action.help
        return super()._get_help_string(action)


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run one cluster node",
        description="Run one cluster node. Every option also reads the environment variable "
        "in brackets; an option on the command line wins.",
        formatter_class=_DefaultsFormatter,
    )
    p.add_argument("--node-id", default=env("CFS_NODE_ID"), help="unique member id [CFS_NODE_ID]")
    p.add_argument(
        "--api",
        default=env("CFS_API", f"127.0.0.1:{DEFAULT_API_PORT}"),
        help="HOST:PORT of the REST API [CFS_API]",
    )
    p.add_argument(
        "--raft",
        default=env("CFS_RAFT", f"127.0.0.1:{DEFAULT_RAFT_PORT}"),
        help="HOST:PORT for Raft [CFS_RAFT]",
    )
    p.add_argument(
        "--peers",
        default=env("CFS_PEERS", ""),
        help="other members' Raft HOST:PORT, comma-separated [CFS_PEERS]",
    )
    p.add_argument(
        "--data-dir",
        default=env("CFS_DATA_DIR", "./cfs-data"),
        help="journal and snapshot directory [CFS_DATA_DIR]",
    )
    p.add_argument(
        "--raft-password",
        default=env("CFS_RAFT_PASSWORD"),
        help="cluster secret encrypting Raft traffic [CFS_RAFT_PASSWORD]",
    )
    p.add_argument(
        "--advertise-url",
        default=env("CFS_ADVERTISE_URL"),
        help="API URL other members use to reach this node [CFS_ADVERTISE_URL]",
    )
    p.add_argument(
        "--dev",
        action="store_true",
        default=env_flag("CFS_DEV"),
        help="a local test node: loopback only, no Raft password needed, and open "
        "(--auth off) unless CFS_BOOTSTRAP_ADMIN or --auth is given [CFS_DEV=1]",
    )
    p.add_argument(
        "--log-level",
        default=env("CFS_LOG_LEVEL", "information"),
        help="Verbose|Debug|Information|Warning|Error|Fatal [CFS_LOG_LEVEL]",
    )
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=env("CFS_LOG_FORMAT", "text"),
        help="[CFS_LOG_FORMAT]",
    )
    p.add_argument(
        "--election-timeout",
        type=float,
        default=env_float("CFS_ELECTION_TIMEOUT", 0.5),
        help="Raft minimum election timeout, seconds [CFS_ELECTION_TIMEOUT]",
    )
    _security_arguments(p)
    p.add_argument(
        "--health-interval",
        type=float,
        default=env_float("CFS_HEALTH_INTERVAL", 60),
        help="seconds between OMF health messages [CFS_HEALTH_INTERVAL]",
    )
    p.add_argument(
        "--cluster-name",
        default=env("CFS_CLUSTER_NAME", "cfs"),
        help="name of the cluster's element in PI [CFS_CLUSTER_NAME]",
    )
    p.add_argument(
        "--drain-seconds",
        type=float,
        default=env_float("CFS_DRAIN_SECONDS", 0),
        help="on SIGTERM: answer /readyz 503, hand leadership over, and keep serving this "
        "long before stopping (use >= the load balancer's detection time) [CFS_DRAIN_SECONDS]",
    )
    p.add_argument(
        "--unsafe-no-fsync",
        action="store_true",
        default=env("CFS_UNSAFE_NO_FSYNC") == "1",
        help="do not fdatasync the journal: a power loss can then lose acknowledged writes "
        "and votes (throwaway test clusters only) [CFS_UNSAFE_NO_FSYNC=1]",
    )
    p.add_argument(
        "--request-read-timeout",
        type=float,
        default=env_float("CFS_REQUEST_READ_TIMEOUT", 10),
        help="seconds a client may take to send a request, headers and body; slower "
        "connections are closed [CFS_REQUEST_READ_TIMEOUT]",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=env_int("CFS_MAX_CONNECTIONS", 4096),
        help="concurrent connections and requests before new ones get 503 [CFS_MAX_CONNECTIONS]",
    )
    p.add_argument(
        "--leader-fallback",
        type=float,
        default=env_float("CFS_LEADER_FALLBACK", 1.0),
        help="seconds a leader keeps leading without a majority [CFS_LEADER_FALLBACK]",
    )


def _security_arguments(p: argparse.ArgumentParser) -> None:
    """Auth, TLS and rate limits (docs/security.md). The bootstrap password is env-only."""
    p.add_argument(
        "--auth",
        default=env("CFS_AUTH"),
        help="required (default): credentials on every call but health and the token "
        "endpoint; off: none, loopback only (the default with --dev) [CFS_AUTH]",
    )
    p.add_argument(
        "--trusted-proxies",
        default=env("CFS_TRUSTED_PROXIES", ""),
        help="comma-separated addresses/CIDRs of reverse proxies whose X-Forwarded-For names "
        "the client (the back-off counts per client) [CFS_TRUSTED_PROXIES]",
    )
    p.add_argument(
        "--tls-cert", default=env("CFS_TLS_CERT"), help="PEM certificate for HTTPS [CFS_TLS_CERT]"
    )
    p.add_argument(
        "--tls-key", default=env("CFS_TLS_KEY"), help="PEM private key for HTTPS [CFS_TLS_KEY]"
    )
    p.add_argument(
        "--tls",
        choices=("off", "self-signed"),
        default=env("CFS_TLS", "off"),
        help="self-signed: generate a certificate in the data dir [CFS_TLS]",
    )
    p.add_argument(
        "--peer-ca-file",
        default=env("CFS_PEER_CA_FILE"),
        help="PEM CA that issued the members' certificates; members verify each other "
        "against it instead of pinning the certificates they publish [CFS_PEER_CA_FILE]",
    )
    p.add_argument(
        "--heartbeat-rate-limit",
        type=float,
        default=env_float("CFS_HEARTBEAT_RATE_LIMIT", 0),
        help="minimum seconds between a session's heartbeats, after a burst of 10; 0 = off [CFS_HEARTBEAT_RATE_LIMIT]",
    )
    p.add_argument(
        "--max-groups",
        type=int,
        default=env_int("CFS_MAX_GROUPS", 50000),
        help="groups the cluster holds at most; 0 = unlimited [CFS_MAX_GROUPS]",
    )
    p.add_argument(
        "--max-sessions-per-group",
        type=int,
        default=env_int("CFS_MAX_SESSIONS_PER_GROUP", 64),
        help="client sessions per group at most; 0 = unlimited [CFS_MAX_SESSIONS_PER_GROUP]",
    )
    p.add_argument(
        "--token-lifetime",
        type=int,
        default=env_int("CFS_TOKEN_LIFETIME", 3600),
        help="seconds an OAuth access token is valid [CFS_TOKEN_LIFETIME]",
    )


def _security_settings(args: argparse.Namespace) -> SecuritySettings:
    bootstrap_admin = env("CFS_BOOTSTRAP_ADMIN") or None
    return SecuritySettings(
        auth=(args.auth or default_auth(args.dev, bootstrap_admin)).strip().lower(),
        bootstrap_admin=bootstrap_admin,
        trusted_proxies=tuple(p.strip() for p in args.trusted_proxies.split(",") if p.strip()),
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
        tls_self_signed=args.tls == "self-signed",
        peer_ca_file=Path(args.peer_ca_file) if args.peer_ca_file else None,
        token_lifetime=args.token_lifetime,
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
        drain_seconds=max(0.0, args.drain_seconds),
        request_read_timeout=args.request_read_timeout,
        max_connections=args.max_connections,
        security=_security_settings(args),
        unsafe_no_fsync=args.unsafe_no_fsync,
        failover=FailoverSettings(
            heartbeat_rate_limit=args.heartbeat_rate_limit,
            max_groups=args.max_groups,
            max_sessions_per_group=args.max_sessions_per_group,
        ),
    )
    settings.validate()
    return settings


def serve(args: argparse.Namespace) -> int:
    from cfs_cluster.api.server import run
    from cfs_cluster.cluster.node import Node
    from cfs_cluster.ops.logs import setup_logging
    from cfs_cluster.storage.files import StorageCorrupt

    settings = build_settings(args)
    _check_administrator(settings)
    setup_logging(settings.log_level, args.log_format)
    logging.getLogger("cfs.node").info("%s", settings.summary(__version__))
    os.umask(0o077)  # journal, snapshot, certificates: readable by this user only
    try:
        node = Node(settings)
    except StorageCorrupt as exc:
        logging.getLogger("cfs.storage").critical("Refusing to start: %s", exc)
        return EXIT_STORAGE_CORRUPT
    if settings.unsafe_no_fsync:
        logging.getLogger("cfs.storage").warning(
            "--unsafe-no-fsync: the journal is not synced; a power loss can lose "
            "acknowledged writes and votes."
        )
    run(node, _tls_files(settings))
    return 0


def _check_administrator(settings: Settings) -> None:
    """Refuse a node that requires credentials but could never get a user: no bootstrap
    administrator, no Raft history of its own (users are in it, or in a restored backup), and
    no peers to learn them from. A joining node starts without users and answers 401 ("no
    users yet") until Raft brings them."""
    from cfs_cluster.ops.backup import RAFT_FILES

    s = settings.security
    if s.auth != "required" or s.bootstrap_admin or settings.peers:
        return
    if any((settings.data_dir / name).exists() for name in RAFT_FILES):
        return
    raise BadRequest(
        "Authentication is required but this node could never get an administrator: set "
        "CFS_BOOTSTRAP_ADMIN=name:password for the first start, give --peers of a cluster that "
        "has users, or restore a backup (cfs restore). For a local trial use --dev on loopback."
    )


def _tls_files(settings: Settings) -> tuple[Path, Path] | None:
    from cfs_cluster.security.tls import certificate_files, check_peer_ca

    check_peer_ca(settings)
    return certificate_files(settings)


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


def _backup_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`cfs backup` and `cfs restore` (backup.py; docs/operations.md, disaster recovery)."""
    from cfs_cluster.cli.backup import add_backup_arguments

    backup = sub.add_parser("backup", help="download a backup of the replicated state (admins)")
    add_connection_arguments(backup)  # the one set of connection options (cliconnect.py)
    restore = sub.add_parser(
        "restore", help="seed an EMPTY data directory from a backup (offline, node stopped)"
    )
    add_backup_arguments(backup, restore)


def _facet_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`cfs facet`: an adapter's ClientFailover configuration API on its own (facet/app.py)."""
    p = sub.add_parser(
        "facet", help="serve the adapter-side ClientFailover configuration API and FailoverState"
    )
    p.add_argument("--host", default=env("CFS_FACET_HOST", "127.0.0.1"), help="[CFS_FACET_HOST]")
    p.add_argument(
        "--port",
        type=int,
        default=env_int("CFS_FACET_PORT", 5590),
        help="[CFS_FACET_PORT]",
    )
    p.add_argument(
        "--data-dir",
        default=env("CFS_FACET_DATA_DIR", "./facet-data"),
        help="where System_ClientFailover.json is kept [CFS_FACET_DATA_DIR]",
    )
    p.add_argument(
        "--log-level", default=env("CFS_LOG_LEVEL", "information"), help="[CFS_LOG_LEVEL]"
    )


def _simulate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`cfs simulate`: emulated adapters measuring data continuity (cfs_cluster.simulator)."""
    from cfs_cluster.cli.simulate import add_simulate_arguments

    p = sub.add_parser("simulate", help="emulated adapters measuring gaps and duplicates")
    add_simulate_arguments(p)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cfs", description="Highly available Client Failover Service"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _dev_cluster_parser(sub)
    add_users_parser(sub)
    add_identity_parsers(sub)  # `cfs clients`, `cfs identity`
    add_cluster_parser(sub)
    add_domain_parsers(sub)  # `cfs groups|sessions|override|events|watch`
    _backup_parsers(sub)
    _facet_parser(sub)
    _simulate_parser(sub)
    args = parser.parse_args(argv)
    try:
        if args.command == "users":
            return users_command(args)
        if args.command in ("clients", "identity"):
            return identity_command(args)
        if args.command == "cluster":
            return cluster_command(args)
        if args.command in DOMAIN_COMMANDS:
            return domain_command(args)
        if args.command in ("backup", "restore"):
            from cfs_cluster.cli.backup import backup_command, restore_command

            return (backup_command if args.command == "backup" else restore_command)(args)
        if args.command == "facet":
            from cfs_cluster.facet.app import facet_command

            return facet_command(args)
        if args.command == "simulate":
            from cfs_cluster.cli.simulate import simulate_command

            return simulate_command(args)
        if args.command == "serve":
            return serve(args)
        return dev_cluster(args)
    except BadRequest as exc:
        print(f"cfs: {exc.reason}", file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"cfs {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # Ctrl-C ends `watch`, `events --follow`, `simulate`: no traceback
        print(file=sys.stderr)
        return 130
