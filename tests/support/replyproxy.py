"""A TCP proxy that can drop the reply path: requests reach the node, answers never come back.

The lost-answer fault of issue 13 without root: an adapter that talks to a node through this
proxy has its heartbeats processed by the cluster (grants renewed, demotions answered) while it
hears nothing, exactly as with an iptables DROP on the node's outgoing packets, a client whose
timeout is shorter than the answer, or a relaying follower that dies before it replies.
It runs on its own event loop thread, listens on 127.0.0.1 only, and is stopped by ``close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from support.clusterkit import free_ports


class ReplyProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_ports(1)[0]
        self.drop_replies = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ReplyProxy:
        self._thread.start()
        start = asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        try:
            node_in, node_out = await asyncio.open_connection(*self.target)
        except OSError:
            client_out.close()
            return
        await asyncio.gather(
            self._pipe(client_in, node_out, replies=False),
            self._pipe(node_in, client_out, replies=True),
            return_exceptions=True,
        )

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, replies: bool
    ) -> None:
        try:
            while data := await source.read(65536):
                if replies and self.drop_replies:
                    continue  # the answer is lost on the way back
                sink.write(data)
                await sink.drain()
        finally:
            with contextlib.suppress(Exception):
                sink.close()
