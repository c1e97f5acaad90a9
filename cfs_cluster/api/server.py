"""Run one node under uvicorn, with a graceful drain on SIGTERM/SIGINT.

A planned stop should cost adapters nothing. With ``drain_seconds`` > 0 the first signal
(1) makes ``/readyz`` answer 503 so load balancers take the node out of rotation,
(2) hands Raft leadership to a caught-up follower at once, and
(3) keeps serving for ``drain_seconds`` — enough for a health check to notice (haproxy
``inter 1s fall 2`` needs 2 s) and for in-flight requests to finish — before uvicorn shuts down.
A second signal stops at once.

Slow clients: uvicorn bounds the idle time between requests (keep-alive) but not the time a
client takes to send one, so a client trickling headers or a body one byte at a time would hold
a connection and its buffers for ever (slowloris). ``GuardedHttpProtocol`` closes a connection
whose request is not complete ``request_read_timeout`` seconds after its first byte, and one that
sends nothing at all within that time after connecting.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cfs_cluster.api.app import create_app
from cfs_cluster.api.errors import error_response_parts
from cfs_cluster.cluster.node import Node
from cfs_cluster.errors import HeadersTooLarge
from cfs_cluster.ops import gcpolicy

__all__ = ["DrainingServer", "GuardedHttpProtocol", "run"]

MAX_HEADER_BYTES = 32 * 1024  # request line + headers; adapters send well under 1 KB


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on reading each request and a limit on
    its headers. Kept to a few attribute writes per request: a timer per request cost 11 % of
    the heartbeat throughput, so one sweep per server checks every connection instead."""

    read_timeout = 10.0  # set per server by ``guarded_protocol``
    max_header_bytes = MAX_HEADER_BYTES
    _sweep: asyncio.TimerHandle | None = None  # one per server (``guarded_protocol`` class)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_since: float | None = None  # a request (or the connection) is unfinished
        self._reading_headers = False
        self._header_bytes = 0
        self._packet = 0  # size of the packet being parsed
        self._refused = False  # answered 431 and closing: ignore the rest of the bytes

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._reading_since = self.loop.time()  # a connection that never sends a byte
        cls = type(self)
        if cls._sweep is None:
            cls._sweep = self.loop.call_later(self._sweep_period(), self._sweep_connections)

    def data_received(self, data: bytes) -> None:
        # httptools sets no header limit of its own. Bytes are counted per packet while the
        # headers are unfinished; the exact size is computed only when a packet could have
        # carried too many (on_headers_complete).
        if self._refused:
            return
        self._packet = len(data)
        super().data_received(data)
        if self._reading_headers and not self._refused:
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._refuse_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_since = self.loop.time()
        self._reading_headers, self._header_bytes = True, 0

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        if self._header_bytes + self._packet > self.max_header_bytes and self._too_big():
            self._refuse_headers()  # and the app never starts on this request
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._reading_since = None
        if not self._refused:
            super().on_message_complete()

    def _too_big(self) -> bool:
        size = len(self.url) + sum(len(name) + len(value) for name, value in self.headers)
        return size > self.max_header_bytes

    def _refuse_headers(self) -> None:
        """431 with the ErrorResponse body, then close; the app never sees the request."""
        status, headers, body = error_response_parts(
            HeadersTooLarge(f"Request line and headers exceed {self.max_header_bytes} bytes.")
        )
        head = [f"HTTP/1.1 {status} Request Header Fields Too Large".encode()]
        head += [name + b": " + value for name, value in headers]
        head += [b"connection: close", b"content-length: " + str(len(body)).encode()]
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.transport.close()
        self._refused = True

    @classmethod
    def _sweep_period(cls) -> float:
        return min(1.0, cls.read_timeout / 4)

    def _sweep_connections(self) -> None:
        """Close every connection whose unfinished request is older than ``read_timeout``."""
        cls = type(self)
        cutoff = self.loop.time() - self.read_timeout
        for connection in list(self.connections):
            if isinstance(connection, GuardedHttpProtocol):
                connection._close_if_stuck(cutoff)
        cls._sweep = self.loop.call_later(self._sweep_period(), self._sweep_connections)

    def _close_if_stuck(self, cutoff: float) -> None:
        since = self._reading_since
        if since is None or since > cutoff or self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            # Nothing useful can be answered to a half-sent request: drop the connection.
            self.transport.close()


def guarded_protocol(read_timeout: float) -> type[GuardedHttpProtocol]:
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"read_timeout": read_timeout})


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, node: Node, drain_seconds: float) -> None:
        super().__init__(config)
        self._node = node
        self._drain_seconds = drain_seconds
        self._draining = False

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Release held long-polls first: uvicorn would wait for them up to its graceful timeout.
        self._node.release_waiters()
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or self._drain_seconds <= 0:
            super().handle_exit(sig, frame)
            return
        self._draining = True
        self._node.begin_drain(self._drain_seconds)
        timer = threading.Timer(self._drain_seconds, super().handle_exit, (sig, frame))
        timer.daemon = True
        timer.start()


def run(node: Node, tls: tuple[Path, Path] | None) -> None:
    settings = node.settings
    config = uvicorn.Config(
        create_app(node),
        host=settings.api_host,
        port=settings.api_port,
        access_log=False,
        log_config=None,
        lifespan="on",
        timeout_keep_alive=75,
        timeout_graceful_shutdown=5,
        http=guarded_protocol(settings.request_read_timeout),
        # Beyond this many concurrent connections and requests, answer 503 at once rather
        # than queue without bound (long-polls count: size it for adapters x 2).
        limit_concurrency=settings.max_connections,
        h11_max_incomplete_event_size=16 * 1024,
        # The heartbeat path pays for every layer: no X-Forwarded-For rewriting (the back-off
        # keys on the TCP peer; a load balancer on another host was never trusted anyway) and
        # no "server: uvicorn" header (nor its version) on every answer.
        proxy_headers=False,
        server_header=False,
    )
    if tls is not None:
        config.ssl_certfile, config.ssl_keyfile = str(tls[0]), str(tls[1])
    gcpolicy.tune()
    gcpolicy.start()
    DrainingServer(config, node, settings.drain_seconds).run()
