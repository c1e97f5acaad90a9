"""Run one node under uvicorn, with a graceful drain on SIGTERM/SIGINT.

A planned stop should cost adapters nothing. With ``drain_seconds`` > 0 the first signal
(1) makes ``/readyz`` answer 503 so load balancers take the node out of rotation,
(2) hands Raft leadership to a caught-up follower at once, and
(3) keeps serving for ``drain_seconds`` — enough for a health check to notice (haproxy
``inter 1s fall 2`` needs 2 s) and for in-flight requests to finish — before uvicorn shuts down.
A second signal stops at once.

Each connection runs api/connection.py's protocol: uvicorn's, with a read deadline and a header
limit (slowloris), and the heartbeat lane below ASGI.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from types import FrameType

import uvicorn

from cfs_cluster.api.app import create_app
from cfs_cluster.api.connection import MAX_HEADER_BYTES, GuardedHttpProtocol, guarded_protocol
from cfs_cluster.cluster.node import Node
from cfs_cluster.ops import gcpolicy

__all__ = ["MAX_HEADER_BYTES", "DrainingServer", "GuardedHttpProtocol", "guarded_protocol", "run"]


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
    front = create_app(node)
    config = uvicorn.Config(
        front,
        host=settings.api_host,
        port=settings.api_port,
        access_log=False,
        log_config=None,
        lifespan="on",
        timeout_keep_alive=75,
        timeout_graceful_shutdown=5,
        http=guarded_protocol(settings.request_read_timeout, front),
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
