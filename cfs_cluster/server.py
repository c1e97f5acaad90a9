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
import gc
import socket
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .api import create_app
from .api.errors import error_response_parts
from .errors import HeadersTooLarge
from .node import Node

__all__ = ["DrainingServer", "GuardedHttpProtocol", "run"]

MAX_HEADER_BYTES = 32 * 1024  # request line + headers; adapters send well under 1 KB


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on reading each request."""

    read_timeout = 10.0  # set per server by ``guarded_protocol``
    max_header_bytes = MAX_HEADER_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._refused = False  # answered 431 and closing: ignore the rest of the bytes

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_read_deadline()  # a connection that never sends a byte

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._arm_read_deadline()

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value))
        super().on_header(name, value)

    def _count_header_bytes(self, size: int) -> None:
        """httptools sets no limit of its own: refuse with 431 and close past ours."""
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes and not self.transport.is_closing():
            status, headers, body = error_response_parts(
                HeadersTooLarge(f"Request line and headers exceed {self.max_header_bytes} bytes.")
            )
            head = [f"HTTP/1.1 {status} Request Header Fields Too Large".encode()]
            head += [name + b": " + value for name, value in headers]
            head += [b"connection: close", b"content-length: " + str(len(body)).encode()]
            self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
            self.transport.close()
            self._refused = True

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def on_headers_complete(self) -> None:
        if not self._refused:  # never start the app for a refused request
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._cancel_read_deadline()
        if not self._refused:
            super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_deadline()
        super().connection_lost(exc)

    def _arm_read_deadline(self) -> None:
        self._cancel_read_deadline()
        self._read_deadline = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _cancel_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
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


# Python's cyclic GC stops the whole process while it scans every tracked object. On the bench
# machine a full (generation 2) pass over a node's ~115k tracked objects took 40-90 ms and ran
# more than once a second under heartbeat load: with 2,000 groups and 4,000 heartbeats/s at the
# leader, p99 was ~100 ms with the default GC and 33 ms with none. Most tracked objects
# (modules, functions, types, the app) live as long as the process: freeze them out of every
# scan, and let every generation run less often. Measured the same way: p99 42-81 ms, p90
# 8-17 ms (default: p90 ~50 ms). Garbage without cycles is still freed at once by reference
# counting; cycles wait a little longer.
GC_THRESHOLDS = (10_000, 10, 10)


def _tune_garbage_collector() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


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
    )
    if tls is not None:
        config.ssl_certfile, config.ssl_keyfile = str(tls[0]), str(tls[1])
    _tune_garbage_collector()
    DrainingServer(config, node, settings.drain_seconds).run()
