"""Explicit, frozen settings objects, and the one place the package reads the environment.

The library takes its settings as arguments (``Settings`` and its parts, built by the CLI);
nothing below ``cli/`` looks at the environment. The CLI reads its ``CFS_*`` variables only
through ``env``, ``env_int``, ``env_float``, ``env_flag`` and ``environment`` here: every
``cfs serve`` flag defaults to its variable (named in brackets in ``--help``), the admin commands
read CFS_URL, CFS_USER, CFS_PASSWORD, CFS_CACERT and CFS_CONFIG, and `cfs restore` reads
CFS_DATA_DIR, CFS_RAFT and CFS_PEERS. The agent and the facet are configured by the adapter
that embeds them and read no environment.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from cfs_cluster.errors import BadRequest

__all__ = [
    "AUTH_MODES",
    "FailoverSettings",
    "RaftSettings",
    "SecuritySettings",
    "Settings",
    "default_auth",
    "env",
    "env_flag",
    "env_float",
    "env_int",
    "environment",
    "is_loopback",
    "parse_address",
]

DEFAULT_API_PORT = 5590
DEFAULT_RAFT_PORT = 5690
WILDCARD_HOSTS = ("0.0.0.0", "::", "[::]", "")


def env(name: str, default: str | None = None) -> str | None:
    """The environment variable ``name``, or ``default`` when it is not set."""
    return os.environ.get(name, default)


def env_float(name: str, default: float) -> float:
    """The variable ``name`` as a number; ``default`` when it is unset or empty."""
    return float(os.environ.get(name) or default)


def env_int(name: str, default: int) -> int:
    """The variable ``name`` as a whole number; ``default`` when it is unset or empty."""
    return int(os.environ.get(name) or default)


def env_flag(name: str) -> bool:
    """True when the variable ``name`` is ``1``, ``true`` or ``yes`` (any case)."""
    return (os.environ.get(name) or "").lower() in ("1", "true", "yes")


def environment() -> dict[str, str]:
    """A copy of the whole environment, for a child process that inherits it."""
    return dict(os.environ)


def parse_address(text: str, default_port: int) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (or ``HOST``); raise BadRequest with a readable message."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = text.strip(), str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadRequest(f"'{text}' is not a HOST:PORT address.")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and addresses in 127.0.0.0/8 or ::1; False for ``0.0.0.0``, ``::``,
    other names (they may resolve to anything) and anything unparsable."""
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


AUTH_MODES = ("required", "off")


def default_auth(dev: bool, bootstrap_admin: str | None) -> str:
    """``--auth`` when none is given: a ``--dev`` node (loopback only) is open unless it was
    given a bootstrap administrator; every other node requires credentials."""
    return "off" if dev and not bootstrap_admin else "required"


@dataclass(frozen=True)
class RaftSettings:
    """pysyncobj timing, in seconds. See docs/operations.md for how each one trades off.

    ``min_timeout`` must exceed 3 x ``append_entries_period`` (pysyncobj asserts it), and
    ``leader_fallback`` bounds how long a cut-off leader believes it still leads; the failover
    margin of P1 is derived from it.
    """

    min_timeout: float = 0.5
    max_timeout: float = 1.0
    append_entries_period: float = 0.05
    leader_fallback: float = 1.0
    connection_timeout: float = 1.0
    connection_retry: float = 0.5
    tick_period: float = 0.01
    compaction_min_entries: int = 20_000
    compaction_min_time: float = 300.0

    def validate(self) -> None:
        if self.min_timeout <= 3 * self.append_entries_period:
            raise BadRequest("raft min_timeout must exceed 3 x append_entries_period.")
        if self.max_timeout < self.min_timeout:
            raise BadRequest("raft max_timeout must be >= min_timeout.")
        if self.leader_fallback < self.min_timeout:
            raise BadRequest("raft leader_fallback must be >= min_timeout.")


@dataclass(frozen=True)
class FailoverSettings:
    """Timing of the failover rules (design.md P1/P3)."""

    # Seconds after FailoverTimeout before a silent grant holder is certainly expired: covers
    # the sweep period, request processing and clock-rate drift (see docs/safety.md).
    expiry_margin: float = 0.3
    # Fraction of FailoverTimeout an adapter may trust a grant for, on its own clock: 1 - rho,
    # with rho = 1e-3 a generous bound on the clock-rate difference between two machines.
    validity_fraction: float = 0.999
    sweep_period: float = 0.1
    checkpoint_interval: float = 2.0
    # Longest a follower waits to coalesce heartbeats into one relay request; 0 = only those
    # that arrive in the same event-loop iteration (batches still grow under load, forwarding.py).
    relay_linger: float = 0.0
    heartbeat_rate_limit: float = 0.0  # minimum seconds between heartbeats; 0 = off
    # Bounds on the replicated state, so a runaway or hostile client cannot grow it without
    # end (every group and session costs memory on every node and time in every snapshot).
    # The capacity benchmark holds 10,000 groups x 2 sessions; 0 = unlimited.
    max_groups: int = 50_000
    max_sessions_per_group: int = 64


@dataclass(frozen=True)
class SecuritySettings:
    """Authentication, back-off and TLS (docs/security.md)."""

    # "required": every call but health and the token endpoint needs credentials (401 until a
    # user exists); "off": none are checked, allowed on loopback only (Settings.validate).
    auth: str = "required"
    bootstrap_admin: str | None = None  # "name:password", applied once through Raft
    failures_before_backoff: int = 5  # wrong credentials for one account before it must wait
    # Wrong credentials from one source address, whichever accounts, before it must wait. Higher
    # than the per-account count: one address may be a NAT or proxy in front of many adapters.
    source_failures_before_backoff: int = 20
    max_backoff: float = 60.0  # seconds
    # Addresses (CIDR) of reverse proxies whose X-Forwarded-For names the real client; the
    # back-off counts per client address, so without this every adapter behind a proxy is one.
    trusted_proxies: tuple[str, ...] = ()
    credential_cache_seconds: float = 300.0
    # Lifetime of OAuth access tokens (tokens.py); adapters refresh 30 s before expiry (§8.3).
    token_lifetime: int = 3600
    heartbeat_burst: int = 10  # heartbeats a session may send at once under the rate limit
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_self_signed: bool = False
    # The CA that issued the members' API certificates; members then trust it (not the
    # certificates they publish) when they call each other (tls.member_trust_context).
    peer_ca_file: Path | None = None

    @property
    def tls(self) -> bool:
        return self.tls_self_signed or self.tls_cert is not None

    def validate(self) -> None:
        if self.auth == "auto":
            raise BadRequest(
                "--auth auto was removed: it left a new cluster open to anyone until the first "
                "user existed. Use --auth required with CFS_BOOTSTRAP_ADMIN=name:password (the "
                "default), or --auth off on loopback for a local trial."
            )
        if self.auth not in AUTH_MODES:
            raise BadRequest("--auth must be 'required' or 'off'.")
        if self.bootstrap_admin is not None and ":" not in self.bootstrap_admin:
            raise BadRequest("CFS_BOOTSTRAP_ADMIN must be 'name:password'.")
        if not 1 <= self.token_lifetime <= 86_400:
            raise BadRequest("--token-lifetime must be between 1 and 86400 seconds.")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise BadRequest("--tls-cert and --tls-key go together.")
        if min(self.failures_before_backoff, self.source_failures_before_backoff) < 1:
            raise BadRequest("The back-off thresholds must be at least 1.")
        for network in self.trusted_proxies:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise BadRequest(
                    f"--trusted-proxies: '{network}' is not an address or CIDR network."
                ) from None


@dataclass(frozen=True)
class Settings:
    node_id: str
    api_host: str
    api_port: int
    raft_address: str
    peers: tuple[str, ...]
    data_dir: Path
    raft_password: str | None = None
    dev: bool = False
    advertise_url: str | None = None
    raft: RaftSettings = field(default_factory=RaftSettings)
    failover: FailoverSettings = field(default_factory=FailoverSettings)
    request_timeout: float = 5.0
    drain_seconds: float = 0.0  # graceful stop: not ready + leadership handed over, then stop
    max_body_bytes: int = 1 << 20
    # Seconds a client may take to send one request, headers and body (slowloris guard).
    request_read_timeout: float = 10.0
    max_connections: int = 4096  # concurrent connections + requests before 503
    log_level: str = "info"
    # Seconds between health/diagnostics OMF messages (spec §6.1: every minute).
    health_interval: float = 60.0
    # Names the cluster-wide element and FailoverObjectCount stream in PI (omf.py).
    cluster_name: str = "cfs"
    security: SecuritySettings = field(default_factory=SecuritySettings)
    # Skip fdatasync (tests on throwaway data only): an acknowledged write, or a vote, can
    # then be lost on power loss of a majority. Production always syncs (docs/safety.md).
    unsafe_no_fsync: bool = False
    # Tests only: a file holding seconds added to this node's wall clock, re-read when it
    # changes, so a fault test can skew the clock or make it jump (cluster/clock.py).
    test_clock_file: Path | None = None

    @property
    def api_url(self) -> str:
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        host = "127.0.0.1" if self.api_host in WILDCARD_HOSTS else self.api_host
        scheme = "https" if self.security.tls else "http"
        return f"{scheme}://{host}:{self.api_port}"

    def summary(self, version: str) -> str:
        """The start-up line: what this node is and how it is reached (docs/operations.md)."""
        sec = self.security
        tls = "off"
        if sec.tls_cert is not None:
            tls = f"certificate {sec.tls_cert}"
        elif sec.tls_self_signed:
            tls = "self-signed"
        return (
            f"cfs {version} node {self.node_id}: api {self.api_host}:{self.api_port}, "
            f"raft {self.raft_address}, advertised {self.api_url}, "
            f"peers {','.join(self.peers) or 'none (one-node cluster)'}, auth {sec.auth}, "
            f"tls {tls}, data dir {self.data_dir.resolve()}"
            + (", DEV mode (no Raft password)" if self.dev and not self.raft_password else "")
        )

    def validate(self) -> None:
        self.raft.validate()
        self.security.validate()
        if not self.node_id:
            raise BadRequest("node id must not be empty.")
        if not 0.1 <= self.request_read_timeout <= 3600:
            raise BadRequest("--request-read-timeout must be between 0.1 and 3600 seconds.")
        if self.max_connections < 16:
            raise BadRequest("--max-connections must be at least 16.")
        if self.failover.max_groups < 0 or self.failover.max_sessions_per_group < 0:
            raise BadRequest("--max-groups and --max-sessions-per-group must be >= 0.")
        if not 0.1 <= self.health_interval <= 86_400:
            raise BadRequest("--health-interval must be between 0.1 and 86400 seconds.")
        if self.raft_address in self.peers:
            raise BadRequest("--peers must list the *other* members, not this node's --raft.")
        self._check_exposure()  # first of the address checks: the one that protects the node
        if self.api_host in WILDCARD_HOSTS and not self.advertise_url:
            raise BadRequest(
                f"--api {self.api_host or '*'}:{self.api_port} listens on every interface, so "
                "the URL other members and clients reach this node at cannot be guessed: give "
                "--advertise-url (CFS_ADVERTISE_URL), e.g. http://10.0.0.11:5590."
            )

    def _check_exposure(self) -> None:
        """Refuse, before anything binds, a node that would be reachable beyond this machine
        without protection: pysyncobj unpickles (runs) whatever an unauthenticated peer sends."""
        raft_host = self.raft_address.rpartition(":")[0]
        exposed = [
            f"{flag} {address}"
            for flag, host, address in (
                ("--api", self.api_host, f"{self.api_host}:{self.api_port}"),
                ("--raft", raft_host, self.raft_address),
                *(("--peers", p.rpartition(":")[0], p) for p in self.peers),
            )
            if not is_loopback(host)
        ]
        if self.dev and exposed:
            raise BadRequest(
                f"--dev (CFS_DEV=1) runs on loopback only, but {', '.join(exposed)} is not: "
                "drop --dev and give a Raft password (CFS_RAFT_PASSWORD) and a bootstrap "
                "administrator (CFS_BOOTSTRAP_ADMIN) to serve on a network."
            )
        if not self.dev and not self.raft_password:
            raise BadRequest(
                "A Raft password is required (CFS_RAFT_PASSWORD or --raft-password): without "
                "one anyone reaching the Raft port can run code on this node. Use --dev only "
                "for a local test cluster on loopback."
            )
        if self.security.auth == "off" and not is_loopback(self.api_host):
            raise BadRequest(
                f"--auth off is allowed on loopback only, but --api is {self.api_host}: "
                "use --auth required with CFS_BOOTSTRAP_ADMIN=name:password."
            )
