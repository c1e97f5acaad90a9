"""api/server.py: the guarded HTTP protocol under a real uvicorn server on 127.0.0.1:0 (a tiny
ASGI app, raw sockets as clients), and the drain on the first signal with a fake node."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from cfs_cluster.api.server import MAX_HEADER_BYTES, DrainingServer, guarded_protocol

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class App:
    """Answers 200 "ok" and counts the requests that reached it."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        self.calls += 1
        while (await receive()).get("more_body"):
            pass
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def serving(app: App, read_timeout: float) -> AsyncIterator[int]:
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        http=guarded_protocol(read_timeout),
        lifespan="off",
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)  # uvicorn offers no event for "listening"
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task


async def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` and read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def test_a_complete_request_is_served() -> None:
    app = App()

    async def scenario() -> bytes:
        async with serving(app, read_timeout=5.0) as port:
            return await exchange(port, b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")

    answer = asyncio.run(scenario())
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok")
    assert app.calls == 1


def test_headers_over_the_limit_get_431_with_an_error_body_and_never_reach_the_app() -> None:
    app = App()
    big = b"x-filler: " + b"a" * MAX_HEADER_BYTES + b"\r\n"

    async def scenario() -> bytes:
        async with serving(app, read_timeout=5.0) as port:
            return await exchange(port, b"GET / HTTP/1.1\r\nhost: x\r\n" + big + b"\r\n")

    answer = asyncio.run(scenario())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431")
    assert b"connection: close" in head
    assert str(MAX_HEADER_BYTES) in json.loads(body)["Reason"]
    assert app.calls == 0


def test_a_request_trickled_past_the_read_timeout_is_dropped() -> None:
    app = App()

    async def scenario() -> tuple[bytes, float]:
        async with serving(app, read_timeout=0.3) as port:
            loop = asyncio.get_running_loop()
            started = loop.time()
            answer = await exchange(port, b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n")
            return answer, loop.time() - started

    answer, took = asyncio.run(scenario())
    assert answer == b""  # closed without an answer: nothing useful fits a half-sent request
    assert 0.3 <= took < 3
    assert app.calls == 0


def test_a_connection_that_sends_nothing_is_closed() -> None:
    async def scenario() -> bytes:
        async with serving(App(), read_timeout=0.3) as port:
            return await exchange(port, b"")

    assert asyncio.run(scenario()) == b""


class FakeNode:
    def __init__(self) -> None:
        self.drains: list[float] = []
        self.released = 0

    def begin_drain(self, seconds: float) -> None:
        self.drains.append(seconds)

    def release_waiters(self) -> None:
        self.released += 1


def draining_server(node: FakeNode, drain_seconds: float) -> DrainingServer:
    config = uvicorn.Config(App(), host="127.0.0.1", port=0, log_config=None)
    return DrainingServer(config, node, drain_seconds)  # type: ignore[arg-type]


def test_the_first_signal_drains_and_the_second_stops_at_once() -> None:
    node = FakeNode()
    server = draining_server(node, drain_seconds=60)
    server.handle_exit(signal.SIGTERM, None)
    assert node.drains == [60] and not server.should_exit  # still serving while drained
    server.handle_exit(signal.SIGTERM, None)
    assert server.should_exit and node.drains == [60]


def test_without_a_drain_the_first_signal_stops() -> None:
    node = FakeNode()
    server = draining_server(node, drain_seconds=0)
    server.handle_exit(signal.SIGINT, None)
    assert server.should_exit and node.drains == []


def test_shutdown_releases_held_long_polls_first() -> None:
    node = FakeNode()
    server = draining_server(node, drain_seconds=0)

    async def scenario() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)  # uvicorn offers no event for "listening"
        assert node.released == 0
        server.should_exit = True
        await task

    asyncio.run(scenario())
    assert node.released == 1
