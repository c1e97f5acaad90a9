"""`cfs serve`: its flags (each also an environment variable), the Settings built from them,
and starting the node."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from cfs_cluster import __version__
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
    parse_address,
)

__all__ = ["EXIT_STORAGE_CORRUPT", "build_settings", "serve", "serve_parser"]

EXIT_STORAGE_CORRUPT = 65  # EX_DATAERR: a data file is damaged; restore the node from a peer


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each default, except none at all and the Raft password (it may come from the
    environment: --help must not print it)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        unset = action.default is None or action.default is False or action.default == ""
        if unset or action.dest == "raft_password":
            return action.help
        return super()._get_help_string(action)


def _option(
    p: argparse.ArgumentParser,
    flag: str,
    variable: str,
    default: str | int | float | None,
    text: str,
    choices: tuple[str, ...] | None = None,
) -> None:
    """``flag``, whose default is the environment variable ``variable`` (named in its help),
    else ``default``; a number when ``default`` is one (an empty variable is then unset)."""
    value: str | int | float | None
    kind: type[str] | type[int] | type[float]
    if isinstance(default, float):
        value, kind = env_float(variable, default), float
    elif isinstance(default, int):
        value, kind = env_int(variable, default), int
    else:
        value, kind = env(variable, default), str
    p.add_argument(
        flag, type=kind, default=value, choices=choices, help=f"{text} [{variable}]".lstrip()
    )


def serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run one cluster node",
        description="Run one cluster node. Every option also reads the environment variable "
        "in brackets; an option on the command line wins.",
        formatter_class=_DefaultsFormatter,
    )
    _option(p, "--node-id", "CFS_NODE_ID", None, "unique member id")
    _option(p, "--api", "CFS_API", f"127.0.0.1:{DEFAULT_API_PORT}", "HOST:PORT of the REST API")
    _option(p, "--raft", "CFS_RAFT", f"127.0.0.1:{DEFAULT_RAFT_PORT}", "HOST:PORT for Raft")
    _option(p, "--peers", "CFS_PEERS", "", "other members' Raft HOST:PORT, comma-separated")
    _option(p, "--data-dir", "CFS_DATA_DIR", "./cfs-data", "journal and snapshot directory")
    _option(
        p, "--raft-password", "CFS_RAFT_PASSWORD", None, "cluster secret encrypting Raft traffic"
    )
    _option(
        p,
        "--advertise-url",
        "CFS_ADVERTISE_URL",
        None,
        "API URL other members use to reach this node",
    )
    p.add_argument(
        "--dev",
        action="store_true",
        default=env_flag("CFS_DEV"),
        help="a local test node: loopback only, no Raft password needed, and open "
        "(--auth off) unless CFS_BOOTSTRAP_ADMIN or --auth is given [CFS_DEV=1]",
    )
    _option(
        p,
        "--log-level",
        "CFS_LOG_LEVEL",
        "information",
        "Verbose|Debug|Information|Warning|Error|Fatal",
    )
    _option(p, "--log-format", "CFS_LOG_FORMAT", "text", "", choices=("text", "json"))
    _option(
        p,
        "--election-timeout",
        "CFS_ELECTION_TIMEOUT",
        0.5,
        "Raft minimum election timeout, seconds",
    )
    _security_arguments(p)
    _option(
        p, "--health-interval", "CFS_HEALTH_INTERVAL", 60.0, "seconds between OMF health messages"
    )
    _option(p, "--cluster-name", "CFS_CLUSTER_NAME", "cfs", "name of the cluster's element in PI")
    _option(
        p,
        "--drain-seconds",
        "CFS_DRAIN_SECONDS",
        0.0,
        "on SIGTERM: answer /readyz 503, hand leadership over, and keep serving this long "
        "before stopping (use >= the load balancer's detection time)",
    )
    p.add_argument(
        "--unsafe-no-fsync",
        action="store_true",
        default=env("CFS_UNSAFE_NO_FSYNC") == "1",
        help="do not fdatasync the journal: a power loss can then lose acknowledged writes "
        "and votes (throwaway test clusters only) [CFS_UNSAFE_NO_FSYNC=1]",
    )
    _option(
        p,
        "--request-read-timeout",
        "CFS_REQUEST_READ_TIMEOUT",
        10.0,
        "seconds a client may take to send a request, headers and body; slower connections "
        "are closed",
    )
    _option(
        p,
        "--max-connections",
        "CFS_MAX_CONNECTIONS",
        4096,
        "concurrent connections and requests before new ones get 503",
    )
    _option(
        p,
        "--test-clock-file",
        "CFS_TEST_CLOCK_FILE",
        None,
        "tests only: a file holding seconds to add to this node's wall clock (re-read as it "
        "changes), to skew it or make it jump",
    )
    _option(
        p,
        "--leader-fallback",
        "CFS_LEADER_FALLBACK",
        1.0,
        "seconds a leader keeps leading without a majority",
    )


def _security_arguments(p: argparse.ArgumentParser) -> None:
    """Auth, TLS and rate limits (docs/security.md). The bootstrap password is env-only."""
    _option(
        p,
        "--auth",
        "CFS_AUTH",
        None,
        "required (default): credentials on every call but health and the token endpoint; "
        "off: none, loopback only (the default with --dev)",
    )
    _option(
        p,
        "--trusted-proxies",
        "CFS_TRUSTED_PROXIES",
        "",
        "comma-separated addresses/CIDRs of reverse proxies whose X-Forwarded-For names the "
        "client (the back-off counts per client)",
    )
    _option(p, "--tls-cert", "CFS_TLS_CERT", None, "PEM certificate for HTTPS")
    _option(p, "--tls-key", "CFS_TLS_KEY", None, "PEM private key for HTTPS")
    _option(
        p,
        "--tls",
        "CFS_TLS",
        "off",
        "self-signed: generate a certificate in the data dir",
        choices=("off", "self-signed"),
    )
    _option(
        p,
        "--peer-ca-file",
        "CFS_PEER_CA_FILE",
        None,
        "PEM CA that issued the members' certificates; members verify each other against it "
        "instead of pinning the certificates they publish",
    )
    _option(
        p,
        "--heartbeat-rate-limit",
        "CFS_HEARTBEAT_RATE_LIMIT",
        0.0,
        "minimum seconds between a session's heartbeats, after a burst of 10; 0 = off",
    )
    _option(
        p,
        "--max-groups",
        "CFS_MAX_GROUPS",
        50000,
        "groups the cluster holds at most; 0 = unlimited",
    )
    _option(
        p,
        "--max-sessions-per-group",
        "CFS_MAX_SESSIONS_PER_GROUP",
        64,
        "client sessions per group at most; 0 = unlimited",
    )
    _option(
        p, "--token-lifetime", "CFS_TOKEN_LIFETIME", 3600, "seconds an OAuth access token is valid"
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
        test_clock_file=Path(args.test_clock_file) if args.test_clock_file else None,
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
