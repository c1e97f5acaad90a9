"""Explicit, frozen settings objects. The CLI builds them; nothing else reads the environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import BadRequest

__all__ = ["FailoverSettings", "RaftSettings", "SecuritySettings", "Settings", "parse_address"]

DEFAULT_API_PORT = 5590
DEFAULT_RAFT_PORT = 5690


def parse_address(text: str, default_port: int) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (or ``HOST``); raise BadRequest with a readable message."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = text.strip(), str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadRequest(f"'{text}' is not a HOST:PORT address.")
    return host, int(port)


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

    # "auto": enforced once the cluster has a user; "required": always (401 until bootstrapped).
    auth: str = "auto"
    bootstrap_admin: str | None = None  # "name:password", applied once through Raft
    failures_before_backoff: int = 5  # wrong credentials from one IP before it must wait
    max_backoff: float = 60.0  # seconds
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
        if self.auth not in ("auto", "required"):
            raise BadRequest("--auth must be 'auto' or 'required'.")
        if self.bootstrap_admin is not None and ":" not in self.bootstrap_admin:
            raise BadRequest("CFS_BOOTSTRAP_ADMIN must be 'name:password'.")
        if not 1 <= self.token_lifetime <= 86_400:
            raise BadRequest("--token-lifetime must be between 1 and 86400 seconds.")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise BadRequest("--tls-cert and --tls-key go together.")


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

    @property
    def api_url(self) -> str:
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        host = "127.0.0.1" if self.api_host in ("0.0.0.0", "") else self.api_host
        scheme = "https" if self.security.tls else "http"
        return f"{scheme}://{host}:{self.api_port}"

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
        if not self.dev and not self.raft_password:
            raise BadRequest(
                "A Raft password is required (--raft-password or CFS_RAFT_PASSWORD); "
                "use --dev only for a local test cluster."
            )
