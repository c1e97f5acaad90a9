"""The agent's settings: one frozen value object, checked when it is built."""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["MODES", "AgentSettings", "default_session_id", "default_session_name"]

MODES = ("Hot", "Warm", "Cold")
SERVICE_NAME = "PythonAgent"


def default_session_id(service_name: str = SERVICE_NAME) -> str:
    """An adapter-style id, ``{MachineName}.{ServiceName}`` (spec §3.2), made unique per process.

    A real adapter's id is stable across restarts because one machine runs one instance of a
    service; an embedded library cannot know that, so a random suffix keeps two collectors on
    one host from sharing a session.
    """
    return f"{socket.gethostname()}.{service_name}.{uuid.uuid4().hex[:12]}"


def default_session_name() -> str:
    return f"{socket.gethostname()} {SERVICE_NAME}"


@dataclass(frozen=True)
class AgentSettings:
    """Where and how the agent joins its failover group.

    Args:
        endpoints: failover endpoint roots, one per node or one load balancer, each like
            ``http://127.0.0.1:5590/api/v1/clientfailover``; tried in order, rotating on errors.
        group_id: the failover group to register in.
        session_id: this adapter's session id; None generates one.
        failover_timeout: T in seconds; heartbeats go every T/2. The server's value wins when
            the group already exists with another one.
        mode: ``Hot``, ``Warm`` or ``Cold`` (only the default FailoverScore depends on it).
        username, password: Basic credentials.
        client_id, client_secret, token_endpoint: OAuth2 client credentials (spec §8.3).
        verify_tls: False accepts any certificate (testing only).
        ca_file: PEM file of the CA (or the nodes' certificates) to verify the nodes with,
            instead of the system trust store.
        request_timeout: seconds for one HTTP request.
    """

    endpoints: tuple[str, ...]
    group_id: str
    session_id: str | None = None
    failover_timeout: float = 60.0
    mode: str = "Hot"
    username: str | None = None
    password: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    token_endpoint: str | None = None
    verify_tls: bool = True
    ca_file: str | None = None
    request_timeout: float = 5.0

    def __post_init__(self) -> None:
        if isinstance(self.endpoints, str):  # a lone string would iterate by character
            object.__setattr__(self, "endpoints", (self.endpoints,))
        if not self.endpoints:
            raise ValueError("endpoints: at least one failover endpoint is required.")
        for url in (*self.endpoints, *([self.token_endpoint] if self.token_endpoint else [])):
            _check_url(url)
        if not self.group_id:
            raise ValueError("group_id is required.")
        if not self.failover_timeout > 0:
            raise ValueError("failover_timeout must be a positive number of seconds.")
        if not self.request_timeout > 0:
            raise ValueError("request_timeout must be a positive number of seconds.")
        if self.mode.capitalize() not in MODES:
            raise ValueError(f"mode '{self.mode}' is not one of {', '.join(MODES)}.")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together.")
        if (self.client_id is None) != (self.client_secret is None):
            raise ValueError("client_id and client_secret go together.")
        if self.username is not None and self.client_id is not None:
            raise ValueError("Use either username/password or client_id/client_secret, not both.")

    @property
    def cold(self) -> bool:
        return self.mode.capitalize() == "Cold"


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"'{url}' is not an absolute http(s) URL.")
