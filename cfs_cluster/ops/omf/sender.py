"""One health endpoint: setup first, then buffered data in order, with back-off and OAuth.

The one OMF sender of the project: the service's health egress (egress.py) and the adapter
side's failover health (cfs_cluster/agent/health.py) both post through ``EndpointSender``. It
imports neither the engine nor the metrics (both only for type checking), so an adapter that
embeds the agent loads no server part with it.
"""

from __future__ import annotations

import base64
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

import httpx

from cfs_cluster.ops.omf.messages import OMF_VERSION, Message, split_message
from cfs_cluster.protocol.retry import retry_after_seconds
from cfs_cluster.protocol.validators import Credentialed

if TYPE_CHECKING:
    from cfs_cluster.ops.metrics import Metrics

log = logging.getLogger("cfs.omf")


MAX_BUFFERED = 1000  # data messages kept per endpoint while it is unreachable
MAX_BACKOFF = 60.0
MAX_RETRY_AFTER = 600.0
POST_TIMEOUT = 10.0
REMEDY_409 = (
    "An OMF type already exists with another definition (e.g. after a version change). "
    "Stop the service and PI Web API, delete the 'Client Failover Services' AF elements, "
    "their templates and the health PI points, start PI Web API, then the service "
    "(spec §6.4; PI Web API 'Clean up the development environment')."
)


class OmfDestination(Credentialed, Protocol):
    """An OMF endpoint's settings, as a health endpoint configuration gives them (spec §6.2)."""

    @property
    def id(self) -> str: ...
    @property
    def endpoint(self) -> str: ...
    @property
    def token_endpoint(self) -> str | None: ...
    @property
    def validate_certificate(self) -> bool: ...


class _Outcome(IntEnum):
    DONE = 0  # accepted, or refused for good (logged): move on
    RETRY = 1  # keep it and wait


class EndpointSender:
    """One endpoint: ``setup`` (types, containers, static data, links) first, then buffered
    data in order, with back-off."""

    def __init__(
        self,
        endpoint: OmfDestination,
        setup: Iterable[Message],
        metrics: Metrics | None,
        clock: Callable[[], float] = time.monotonic,
        max_buffered: int = MAX_BUFFERED,
    ) -> None:
        self.endpoint = endpoint
        self._metrics = metrics
        self._clock = clock
        self._setup: deque[Message] = deque(m for s in setup for m in split_message(s))
        self._data: deque[Message] = deque()
        self._max_buffered = max_buffered
        self._not_before = 0.0
        self._failures = 0
        self._token: tuple[str, float] | None = None
        self._client = httpx.AsyncClient(verify=endpoint.validate_certificate, timeout=POST_TIMEOUT)

    @property
    def buffered(self) -> int:
        return len(self._setup) + len(self._data)

    def resend(self, setup: Iterable[Message]) -> None:
        """Send ``setup`` again before any more data (a static asset that changed)."""
        self._setup.extend(m for s in setup for m in split_message(s))

    def enqueue(self, message: Message) -> None:
        for part in split_message(message):
            if len(self._data) >= self._max_buffered:
                self._data.popleft()  # the oldest data is the least useful
                if self._metrics is not None:
                    self._metrics.omf_buffered.labels(self.endpoint.id).inc()
            self._data.append(part)

    async def flush(self) -> None:
        """Send what is buffered, in order, until done or the endpoint asks us to wait."""
        if self._clock() < self._not_before:
            return
        while self._setup or self._data:
            queue = self._setup if self._setup else self._data
            if await self._post(queue[0]) == _Outcome.RETRY:
                return
            queue.popleft()

    async def close(self) -> None:
        await self._client.aclose()

    async def _post(self, message: Message) -> _Outcome:
        body = message.encode()
        url = self.endpoint.endpoint
        try:
            headers = await self._headers(message)
            response = await self._client.post(url, content=body, headers=headers)
        except (httpx.HTTPError, KeyError, ValueError) as exc:  # ValueError: a bad token answer
            return self._retry(f"{type(exc).__name__}: {exc}", None)
        status = response.status_code
        if 200 <= status < 300:
            self._succeeded(message, body, status)
            return _Outcome.DONE
        if status == 401:
            self._token = None  # an expired bearer token: fetch a new one next time
        if status in (401, 403, 408, 429) or status >= 500:
            return self._retry(f"HTTP {status} {response.reason_phrase}", _retry_after(response))
        return self._refused(message, status, response.text[:500])

    def _succeeded(self, message: Message, body: bytes, status: int) -> None:
        if self._failures:
            log.info("Health endpoint '%s' is reachable again.", self.endpoint.id)
        self._failures = 0
        self._count("success")
        if log.isEnabledFor(
            5
        ):  # Verbose: trace the request content, as the commercial service does
            log.log(
                5,
                "Post to %s successful: %s Request Content: %s",
                self.endpoint.endpoint,
                status,
                body.decode(),
            )
        else:
            log.debug(
                "Post of %s to %s successful: %s",
                message.message_type,
                self.endpoint.endpoint,
                status,
            )

    def _retry(self, why: str, retry_after: float | None) -> _Outcome:
        self._failures += 1
        self._count("failure")
        backoff = min(MAX_BACKOFF, 2.0 ** (self._failures - 1))
        delay = retry_after if retry_after is not None else backoff
        self._not_before = self._clock() + delay
        level = logging.WARNING if self._failures == 1 else logging.DEBUG
        log.log(
            level,
            "Post to %s unsuccessful: %s; %d message(s) buffered, retrying in %.1f s.",
            self.endpoint.endpoint, why, self.buffered, delay,
        )  # fmt: skip
        return _Outcome.RETRY

    def _refused(self, message: Message, status: int, text: str) -> _Outcome:
        if status == 409 and message.message_type == "type":
            self._count("conflict")
            log.error(
                "Post of OMF types to %s answered 409 Conflict. %s",
                self.endpoint.endpoint,
                REMEDY_409,
            )
            return _Outcome.DONE  # data still flows while the containers exist (seed 000)
        self._count("rejected")
        log.error(
            "Post of OMF %s to %s refused with HTTP %d; message dropped: %s",
            message.message_type, self.endpoint.endpoint, status, text,
        )  # fmt: skip
        return _Outcome.DONE

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.omf_posts.labels(self.endpoint.id, outcome).inc()

    async def _headers(self, message: Message) -> dict[str, str]:
        headers = {
            "messagetype": message.message_type,
            "messageformat": "json",
            "omfversion": OMF_VERSION,
            "action": message.action,
            "content-type": "application/json",
        }
        e = self.endpoint
        if e.client_id is not None:
            headers["authorization"] = f"Bearer {await self._bearer()}"
        else:
            headers["x-requested-with"] = "XMLHttpRequest"  # PI Web API's CSRF defence
        if e.username is not None:
            raw = f"{e.username}:{e.password or ''}".encode()
            headers["authorization"] = "Basic " + base64.b64encode(raw).decode()
            headers["accept-verbosity"] = "verbose"
        return headers

    async def _bearer(self) -> str:
        """Client-credentials token for CONNECT data services, cached until shortly before expiry."""
        if self._token is not None and self._clock() < self._token[1]:
            return self._token[0]
        e = self.endpoint
        response = await self._client.post(
            e.token_endpoint or _default_token_endpoint(e.endpoint),
            data={
                "grant_type": "client_credentials",
                "client_id": e.client_id or "",
                "client_secret": e.client_secret or "",
            },
        )
        if response.status_code != 200:
            raise httpx.HTTPError(f"token endpoint answered HTTP {response.status_code}")
        payload = response.json()
        token = str(payload["access_token"])
        lifetime = float(payload.get("expires_in", 3600))
        self._token = (token, self._clock() + max(0.0, lifetime - 60))
        return token


def _default_token_endpoint(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}/identity/connect/token"


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After as seconds or an HTTP date (protocol/retry.py); None when absent."""
    return retry_after_seconds(response.headers.get("retry-after"), MAX_RETRY_AFTER)
