"""A TCP proxy that can lose the answers: requests reach the node, answers never come back.

The lost-answer fault of issue 13 without root: an adapter that talks to a node through this
proxy has its heartbeats processed by the cluster (grants renewed, demotions answered) while it
hears nothing. Once ``drop_replies`` is set, the first bytes of each answer are discarded and
the adapter's connection is closed, as when the node that relays it dies mid-reply.
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
        self._writers: set[asyncio.StreamWriter] = set()

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
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        self._writers.add(client_out)
        try:
            node_in, node_out = await asyncio.open_connection(*self.target)
        except OSError:
            client_out.close()
            return
        self._writers.add(node_out)
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
                    return  # the answer is lost; the connection goes down with it
                sink.write(data)
                await sink.drain()
        finally:
            with contextlib.suppress(Exception):
                sink.close()
                await sink.wait_closed()
            self._writers.discard(sink)
