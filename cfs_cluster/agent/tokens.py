"""OAuth2 client credentials for the failover endpoint (spec §8.3, AF AccessTokenManager).

``POST <token_endpoint>`` with the form ``grant_type=client_credentials``, ``client_id``,
``client_secret``; the answer's ``access_token`` is sent as ``Authorization: Bearer`` and
refreshed 30 s before ``expires_in`` runs out (at half its life when that is shorter). Without a
configured TokenEndpoint it is discovered from
``<scheme>://<host>[:port]/identity/.well-known/openid-configuration`` of the failover endpoint;
with several endpoints (one per node) a node that cannot be reached, or answers 5xx, is passed
over for the next one, since any node's token is good on every node.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Generator, Sequence
from urllib.parse import urlsplit

import httpx

from cfs_cluster.agent.transport import EndpointError, Refused, Unreachable

__all__ = ["BearerAuth", "TokenProvider", "discovery_url"]

REFRESH_BEFORE_EXPIRY = 30.0
DEFAULT_LIFETIME = 3600.0


def discovery_url(endpoint: str) -> str:
    """The OpenID discovery document on the failover endpoint's host."""
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}/identity/.well-known/openid-configuration"


class TokenProvider:
    """Fetches and caches one access token; safe to share between concurrent requests."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        client_id: str,
        client_secret: str,
        token_endpoint: str | None,
        failover_endpoint: str | Sequence[str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._client_id = client_id
        self._client_secret = client_secret
        self._configured = token_endpoint
        self._token_endpoint = token_endpoint  # configured, or discovered on the current node
        endpoints = (
            (failover_endpoint,) if isinstance(failover_endpoint, str) else failover_endpoint
        )
        self._discoveries = list(dict.fromkeys(discovery_url(e) for e in endpoints))
        if not self._discoveries:
            raise ValueError("At least one failover endpoint is required.")
        self._current = 0
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self, force: bool = False) -> str:
        async with self._lock:
            if force or self._token is None or self._clock() >= self._refresh_at:
                await self._fetch()
            assert self._token is not None
            return self._token

    async def _fetch(self) -> None:
        if self._configured is not None:
            await self._request_token(self._configured)
            return
        failures: list[str] = []
        for _ in range(len(self._discoveries)):
            try:
                await self._request_token(self._token_endpoint or await self._discover())
                return
            except (Unreachable, Refused) as exc:
                if isinstance(exc, Refused) and exc.status is not None and exc.status < 500:
                    raise  # wrong credentials are wrong on every node
                failures.append(str(exc))
                # This node cannot issue a token now: discover the next node's endpoint.
                self._token_endpoint = None
                self._current = (self._current + 1) % len(self._discoveries)
        raise Unreachable("; ".join(failures))

    async def _request_token(self, endpoint: str) -> None:
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret,
        }
        body = await self._json("POST", endpoint, data=form)
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise Refused(f"{endpoint}: the answer has no access_token")
        lifetime = body.get("expires_in", DEFAULT_LIFETIME)
        lifetime = float(lifetime) if isinstance(lifetime, int | float) else DEFAULT_LIFETIME
        early = min(REFRESH_BEFORE_EXPIRY, lifetime / 2)
        self._token, self._refresh_at = token, self._clock() + lifetime - early

    async def _discover(self) -> str:
        url = self._discoveries[self._current]
        body = await self._json("GET", url)
        endpoint = body.get("token_endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            raise Refused(f"{url}: no token_endpoint in the discovery document")
        self._token_endpoint = endpoint  # kept while this node answers, as the adapter does
        return endpoint

    async def _json(
        self, method: str, url: str, data: dict[str, str] | None = None
    ) -> dict[str, object]:
        try:
            # auth=None: the shared client's BearerAuth would otherwise wait on our own lock.
            response = await self._client.request(method, url, data=data, auth=None)
        except httpx.TransportError as exc:
            raise Unreachable(f"{url}: {type(exc).__name__} {exc}") from exc
        if response.status_code != 200:
            raise Refused(f"{url}: {response.status_code}", status=response.status_code)
        try:
            body = response.json()
        except ValueError as exc:
            raise Refused(f"{url}: the answer is not JSON") from exc
        if not isinstance(body, dict):
            raise Refused(f"{url}: the answer is not a JSON object")
        return body


class BearerAuth(httpx.Auth):
    """httpx auth flow: a Bearer token on every request, one refresh and retry after a 401."""

    def __init__(self, provider: TokenProvider) -> None:
        self._provider = provider

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = f"Bearer {await self._provider.token()}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"Bearer {await self._provider.token(force=True)}"
            yield request

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        raise EndpointError("BearerAuth works with httpx.AsyncClient only.")
