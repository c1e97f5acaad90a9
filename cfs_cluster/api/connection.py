"""One HTTP connection of a node: uvicorn's httptools protocol with three additions.

- Slow clients: uvicorn bounds the idle time between requests (keep-alive) but not the time a
  client takes to send one, so a client trickling headers or a body one byte at a time would
  hold a connection and its buffers for ever (slowloris). A request not complete
  ``read_timeout`` seconds after its first byte, or a connection that sends nothing at all
  within that time, is closed.
- Headers beyond ``max_header_bytes`` are answered 431 and the app never sees the request.
- Heartbeats skip ASGI (api/fastlane.py): a POST to the heartbeat route with a body of known
  size, no member signature, no ``Expect: 100-continue``, is answered by the heartbeat lane
  when its body is in, in one write. Everything else — and a heartbeat that is not like that —
  goes through uvicorn's request cycle to the front door as before. A heartbeat takes its
  place in a pipeline like any request: answers leave in the order the requests came.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from cfs_cluster.api.errors import error_response_parts
from cfs_cluster.api.fastlane import Reply
from cfs_cluster.api.frontdoor import FrontDoor
from cfs_cluster.errors import HeadersTooLarge
from cfs_cluster.security.memberauth import MEMBER_HEADER

__all__ = ["MAX_HEADER_BYTES", "GuardedHttpProtocol", "guarded_protocol"]

MAX_HEADER_BYTES = 32 * 1024  # request line + headers; adapters send well under 1 KB
_MEMBER_HEADER = MEMBER_HEADER.lower().encode()


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on reading each request and a limit on
    its headers. Kept to a few attribute writes per request: a timer per request cost 11 % of
    the heartbeat throughput, so one sweep per server checks every connection instead."""

    read_timeout = 10.0  # set per server by ``guarded_protocol``
    front: FrontDoor | None = None  # the node's front door, whose lane answers heartbeats
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
        if self.front is None or not self._take_heartbeat(self.front):
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._reading_since = None
        if self._refused:
            return
        cycle = self.cycle
        if isinstance(cycle, HeartbeatCycle):
            cycle.body_complete()
            return
        super().on_message_complete()

    # ----------------------------------------------------------------- the heartbeat lane

    def _take_heartbeat(self, front: FrontDoor) -> bool:
        """Start this request as a ``HeartbeatCycle`` if it is a heartbeat the lane can take."""
        if self.expect_100_continue or self.parser.get_method() != b"POST":
            return False
        try:
            match = front.routes.match(httptools.parse_url(self.url).path)
        except httptools.HttpParserInvalidURLError:
            return False  # uvicorn's own path answers it
        if match is None or match.route is not front.heartbeat_route:
            return False
        length = None
        authorization = None
        for name, value in self.headers:
            if name == b"content-length":
                length = int(value) if value.isdigit() else None
            elif name == b"authorization":
                authorization = value
            elif name == _MEMBER_HEADER or name == b"transfer-encoding":
                return False  # signed by a member, or chunked: the front door's path
        if length is None or length > front.max_body or self._over_limit():
            return False
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        group_id, session_id = match.params
        cycle = HeartbeatCycle(self, group_id, session_id, authorization, keep_alive)
        previous, self.cycle = self.cycle, cycle  # type: ignore[assignment]
        if previous is None or previous.response_complete:
            cycle.start()
        else:  # pipelined behind an unfinished answer: wait for it, like uvicorn does
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, self.app))  # type: ignore[arg-type]
        return True

    def _over_limit(self) -> bool:
        limit = self.limit_concurrency
        return limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if isinstance(cycle, HeartbeatCycle):
            cycle.start()  # its turn in the pipeline
        else:
            super()._start_asgi_task(cycle, app)

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


class _Signal:
    """What uvicorn's protocol sets on a cycle's ``message_event``; a heartbeat needs none."""

    __slots__ = ()

    def set(self) -> None:
        pass


_NO_EVENT = _Signal()


class HeartbeatCycle:
    """One heartbeat's request/response cycle on the lane: the attributes uvicorn's protocol
    reads and writes on a cycle (pipelining, body, disconnect, shutdown), no task, no ASGI."""

    __slots__ = (
        "_authorization",
        "_group_id",
        "_protocol",
        "_session_id",
        "_started",
        "body",
        "disconnected",
        "keep_alive",
        "message_event",
        "more_body",
        "response_complete",
        "response_started",
    )

    def __init__(
        self,
        protocol: GuardedHttpProtocol,
        group_id: str,
        session_id: str,
        authorization: bytes | None,
        keep_alive: bool,
    ) -> None:
        self._protocol = protocol
        self._group_id = group_id
        self._session_id = session_id
        self._authorization = authorization
        self._started = False
        self.keep_alive = keep_alive
        self.body = bytearray()
        self.more_body = True
        self.message_event = _NO_EVENT
        self.disconnected = False
        self.response_started = False
        self.response_complete = False

    def start(self) -> None:
        """Its turn to be answered (at once, or when the answer before it is written)."""
        self._started = True
        if not self.more_body:
            self._answer()

    def body_complete(self) -> None:
        if self.response_complete:
            return
        self.more_body = False
        if self._started:
            self._answer()

    def _answer(self) -> None:
        protocol = self._protocol
        front = protocol.front
        assert front is not None
        front.lane.answer(
            self._group_id,
            self._session_id,
            self._authorization,
            lambda: front.node.auth.source_of(protocol.client, protocol.headers),
            bytes(self.body),
            self._send,
        )

    def _send(self, reply: Reply) -> None:
        """Write the whole answer at once; then the next pipelined request may go."""
        if self.response_complete:
            return
        self.response_started = self.response_complete = True
        if self.disconnected:
            return
        protocol = self._protocol
        status, headers, body = reply
        head = [STATUS_LINE[status]]
        for name, value in (*protocol.server_state.default_headers, *headers):
            head += (name, b": ", value, b"\r\n")
        head.append(b"content-length: %d\r\n" % len(body))
        if not self.keep_alive:
            head.append(b"connection: close\r\n")
        head += (b"\r\n", body)
        protocol.transport.write(b"".join(head))
        if not self.keep_alive:
            protocol.transport.close()
        protocol.on_response_complete()


def guarded_protocol(
    read_timeout: float, front: FrontDoor | None = None
) -> type[GuardedHttpProtocol]:
    """The protocol class of one server: its read deadline, and the front door whose lane
    answers heartbeats (None: every request goes through ASGI)."""
    attributes = {"read_timeout": read_timeout, "front": front}
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), attributes)
