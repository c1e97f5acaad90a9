"""Kept-alive HTTP/1.1 connections to one member's API, for a follower's calls to its leader
that happen all the time: relayed heartbeat batches and read confirmations.

httpx cost ~0.3 ms of CPU per request (request and response models, h11's validation, anyio
streams): at a follower's maximum that was 38 % of its core, spent on batches of a few
heartbeats each. These calls always have one shape — a signed POST of a JSON body answered by
a JSON body — so they go out as bytes over persistent connections and the answer is framed by
httptools' response parser (Content-Length or chunked): one request at a time per connection,
connections reused while the server keeps them alive, TLS with the members' trust when the
API is HTTPS. Forwarded administrator requests keep httpx: they are rare and need a full
response.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from typing import cast
from urllib.parse import urlsplit

import httptools

__all__ = ["LinkError", "MemberLink"]

Answer = tuple[int, bytes]  # status, body


class LinkError(Exception):
    """No answer: the connection could not be made (``connecting``), or failed, timed out or
    answered something that is not HTTP."""

    def __init__(self, reason: str, connecting: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.connecting = connecting


class MemberLink:
    def __init__(
        self,
        base_url: str,
        ssl_context: ssl.SSLContext | None,
        connect_timeout: float,
        max_idle: int = 8,
    ) -> None:
        parts = urlsplit(base_url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._authority = parts.netloc.encode("idna")
        self._ssl = ssl_context if parts.scheme == "https" else None
        self._connect_timeout = connect_timeout
        self._max_idle = max_idle
        self._idle: list[_Connection] = []
        self._closed = False

    async def post(
        self, path: str, body: bytes, headers: Sequence[tuple[str, str]], timeout: float
    ) -> Answer:
        """POST ``body`` to ``path``; the status and body of the answer, or LinkError. A kept-
        alive connection the server closed meanwhile is replaced once, before any answer."""
        request = self._request(path, body, headers)
        while self._idle:
            connection = self._idle.pop()
            if connection.usable():
                try:
                    return await self._exchange(connection, request, timeout)
                except _ClosedBeforeAnswer:
                    continue  # the server had closed it: a fresh connection below
        return await self._exchange(await self._connect(timeout), request, timeout)

    def close(self) -> None:
        """Close the idle connections; a request in flight finishes on its own."""
        self._closed = True
        for connection in self._idle:
            connection.close()
        self._idle.clear()

    def _request(self, path: str, body: bytes, headers: Sequence[tuple[str, str]]) -> bytes:
        head = [b"POST " + path.encode("ascii") + b" HTTP/1.1", b"host: " + self._authority]
        head += [f"{name}: {value}".encode("latin-1") for name, value in headers]
        head.append(b"content-length: %d" % len(body))
        return b"\r\n".join(head) + b"\r\n\r\n" + body

    async def _connect(self, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    _Connection,
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                ),
                min(timeout, self._connect_timeout),
            )
        except TimeoutError as exc:
            raise LinkError("connecting timed out", connecting=True) from exc
        except (OSError, ssl.SSLError) as exc:
            raise LinkError(str(exc) or type(exc).__name__, connecting=True) from exc
        return connection

    async def _exchange(self, connection: _Connection, request: bytes, timeout: float) -> Answer:
        try:
            status, body, keep_alive = await asyncio.wait_for(connection.exchange(request), timeout)
        except TimeoutError as exc:
            connection.close()  # an answer may still come: the connection cannot be reused
            raise LinkError("no answer in time", connecting=False) from exc
        except BaseException:
            connection.close()
            raise
        if keep_alive and not self._closed and len(self._idle) < self._max_idle:
            self._idle.append(connection)
        else:
            connection.close()
        return status, body


class _ClosedBeforeAnswer(LinkError):
    def __init__(self) -> None:
        super().__init__("the connection was closed before an answer", connecting=False)


class _Connection(asyncio.Protocol):
    """One connection; ``exchange`` sends a request and waits for its whole answer."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[tuple[int, bytes, bool]] | None = None
        self._body: list[bytes] = []
        self._answering = False  # a byte of the answer has arrived
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def usable(self) -> bool:
        return not self._closed and self._transport is not None and not self._transport.is_closing()

    async def exchange(self, request: bytes) -> tuple[int, bytes, bool]:
        if not self.usable():
            raise _ClosedBeforeAnswer()
        assert self._transport is not None and self._waiter is None
        self._waiter = asyncio.get_running_loop().create_future()
        self._answering = False
        self._transport.write(request)
        return await self._waiter

    def data_received(self, data: bytes) -> None:
        self._answering = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(LinkError(f"not an HTTP answer: {exc}", connecting=False))
            self.close()

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        body, self._body = b"".join(self._body), []
        if waiter is not None and not waiter.done():
            status = self._parser.get_status_code()
            waiter.set_result((status, body, self._parser.should_keep_alive()))

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._answering:
            self._fail(LinkError("the connection was closed during the answer", False))
        else:
            self._fail(_ClosedBeforeAnswer())

    def _fail(self, error: LinkError) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def close(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.close()
