"""The facet as a standalone app: ``cfs facet --port 5590 --data-dir ./facet-data``.

It is what an adapter's own REST port would serve (seed 002) with nothing else: the
configuration facet, FailoverState, and one failover agent driven by the configuration.
"""

from __future__ import annotations

import argparse
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from cfs_cluster import __version__
from cfs_cluster.agent.health import HEALTH_INTERVAL, FailoverHealth
from cfs_cluster.api.errors import install_error_handlers, render
from cfs_cluster.errors import CfsError
from cfs_cluster.facet.router import CONFIGURATION_PATH, HEALTH_PATH, STATE_PATH, create_router
from cfs_cluster.facet.runtime import (
    AgentRuntime,
    FailoverRuntime,
    RoleCallback,
    default_session_id,
)
from cfs_cluster.facet.service import ClientFailoverFacet
from cfs_cluster.facet.store import ConfigStore

__all__ = ["DEFAULT_PORT", "CanonicalPaths", "create_app", "facet_command"]

DEFAULT_PORT = 5590  # the adapters' default REST port (seed 002)
log = logging.getLogger("cfs.facet")


class CanonicalPaths:
    """Route the facet's URLs in any casing and with a trailing slash, as ASP.NET does.

    Starlette matches paths exactly, but the seed's URLs come from a .NET adapter whose routes
    are case-insensitive; users type ``clientfailover`` as often as ``ClientFailover``.
    """

    _PREFIXES = (CONFIGURATION_PATH, STATE_PATH, HEALTH_PATH)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = canonical_path(scope["path"], self._PREFIXES)
            if path != scope["path"]:
                scope = {**scope, "path": path}
        await self.app(scope, receive, send)


def canonical_path(path: str, prefixes: tuple[str, ...]) -> str:
    """``path`` with a matching prefix in its canonical casing and one trailing slash removed."""
    for prefix in prefixes:
        head, rest = path[: len(prefix)], path[len(prefix) :]
        if head.lower() == prefix.lower() and (not rest or rest.startswith("/")):
            return prefix + (rest[:-1] if rest.endswith("/") else rest)
    return path


def create_app(
    data_dir: Path,
    *,
    runtime: FailoverRuntime | None = None,
    session_id: str | None = None,
    on_role_change: RoleCallback | None = None,
    health_interval: float = HEALTH_INTERVAL,
) -> FastAPI:
    """The standalone facet over ``data_dir``; ``runtime`` defaults to a real failover agent.

    The lifespan applies the stored configuration at start and stops failover (unregistering)
    at shutdown, as an adapter does. ``session_id`` defaults to the stored one (or a new one);
    ``on_role_change`` is handed to the agent; ``health_interval`` is the failover health
    heartbeat (one minute, as the adapter framework's).
    """
    store = ConfigStore(data_dir)
    session_id = store.session_id(session_id or default_session_id())
    health = FailoverHealth(
        f"{session_id}.Failover",
        host=socket.gethostname(),
        version=__version__,
        interval=health_interval,
    )
    if runtime is None:
        runtime = AgentRuntime(
            session_id=session_id, on_role_change=on_role_change, store=store, health=health
        )
    facet = ClientFailoverFacet(runtime, store, health=health)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await facet.start()
        try:
            yield
        finally:
            await facet.stop()

    app = FastAPI(
        title="cfs_cluster — ClientFailover facet",
        version=__version__,
        lifespan=lifespan,
        redirect_slashes=False,
    )
    app.state.facet = facet
    install_error_handlers(app)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("Unexpected error on %s %s", request.method, request.url.path)
        return render(CfsError(f"Internal error: {type(exc).__name__}"))

    app.add_exception_handler(Exception, on_unexpected)
    app.include_router(create_router(facet))
    app.add_middleware(CanonicalPaths)
    return app


def facet_command(args: argparse.Namespace) -> int:
    """``cfs facet``: serve the facet until Ctrl-C."""
    import uvicorn

    from cfs_cluster.ops.logs import setup_logging

    setup_logging(args.log_level)
    app = create_app(Path(args.data_dir))
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)
    return 0
