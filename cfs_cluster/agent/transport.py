"""HTTP to the failover endpoints: several node URLs, rotation on failure, typed errors.

Errors the agent acts on, translated here from status codes and httpx exceptions::

    EndpointError
    ├── Unreachable         no endpoint answered (connection refused, reset, timeout)
    ├── EndpointUnavailable         every endpoint answered 503 (no leader yet); carries Retry-After
    ├── RateLimited         429; carries Retry-After
    ├── EndpointNotFound            404: the group or session is unknown (re-register)
    └── Refused             any other non-2xx (400, 401, 403, 409, 5xx)
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any
from urllib.parse import quote

import httpx

from cfs_cluster.protocol.retry import retry_after_seconds

__all__ = [
    "EndpointError",
    "EndpointPool",
    "EndpointNotFound",
    "RateLimited",
    "Refused",
    "EndpointUnavailable",
    "Unreachable",
    "check",
    "session_path",
]

log = logging.getLogger("cfs.agent")


class EndpointError(Exception):
    """A request to the failover endpoints failed."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class Unreachable(EndpointError):
    """No endpoint could be reached."""


class EndpointUnavailable(EndpointError):
    """Every endpoint answered 503."""


class RateLimited(EndpointError):
    """The endpoint answered 429 Too Many Requests."""


class EndpointNotFound(EndpointError):
    """The group or the session is not known to the service."""


class Refused(EndpointError):
    """The endpoint refused the request (any other non-2xx)."""


def session_path(group_id: str, session_id: str, suffix: str = "") -> str:
    """``groups/{g}/clientsessions/{s}[/suffix]`` with the ids percent-encoded."""
    path = f"groups/{quote(group_id, safe='')}/clientsessions/{quote(session_id, safe='')}"
    return f"{path}/{suffix}" if suffix else path


class EndpointPool:
    """Sends each request to the current endpoint; moves on after a connection error or a 503.

    The current endpoint is sticky: a working node keeps being used, so heartbeats do not
    spread over nodes for no reason, and one failing node costs one extra attempt, not a tick.
    """

    def __init__(self, endpoints: tuple[str, ...], client: httpx.AsyncClient) -> None:
        self._roots = [e.rstrip("/") + "/" for e in endpoints]
        self._client = client
        self._current = 0

    @property
    def current(self) -> str:
        return self._roots[self._current]

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """The first non-503 response of the endpoints, tried once each from the current one.

        Raises Unreachable or EndpointUnavailable when every endpoint failed; other statuses are
        returned for the caller to judge (``check``).
        """
        last_503: httpx.Response | None = None
        failures: list[str] = []
        for _ in range(len(self._roots)):
            url = self.current + path
            try:
                response = await self._client.request(
                    method,
                    url,
                    json=json,
                    params=params,
                    timeout=timeout or httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError as exc:
                failures.append(f"{url}: {type(exc).__name__} {exc}".rstrip())
                self._rotate()
                continue
            if response.status_code != 503:
                return response
            last_503 = response
            failures.append(f"{url}: 503")
            self._rotate()
        if last_503 is not None:
            raise EndpointUnavailable(
                "; ".join(failures), status=503, retry_after=retry_after(last_503)
            )
        raise Unreachable("; ".join(failures))

    def _rotate(self) -> None:
        self._current = (self._current + 1) % len(self._roots)


def check(response: httpx.Response, what: str) -> httpx.Response:
    """Return a 2xx response; raise the EndpointError its status means."""
    status = response.status_code
    if 200 <= status < 300:
        return response
    reason = _reason(response)
    message = f"{what}: {status} {reason}".rstrip()
    if status == 404:
        raise EndpointNotFound(message, status=status)
    if status == 429:
        raise RateLimited(message, status=status, retry_after=retry_after(response))
    raise Refused(message, status=status)


def retry_after(response: httpx.Response) -> float | None:
    """The answer's Retry-After in seconds (protocol/retry.py), None without one."""
    return retry_after_seconds(response.headers.get("retry-after"))


def _reason(response: httpx.Response) -> str:
    """The ErrorResponse ``Reason`` if the body has one, else nothing."""
    with contextlib.suppress(ValueError):
        body = response.json()
        if isinstance(body, dict):
            return str(body.get("Reason") or body.get("Error") or "")
    return ""
