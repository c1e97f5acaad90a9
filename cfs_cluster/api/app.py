"""Builds the ASGI application for one node."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.routing import iter_route_contexts
from fastapi_offline import FastAPIOffline
from starlette.routing import Mount

from cfs_cluster import __version__
from cfs_cluster.api import (
    backup,
    clientfailover,
    clients,
    cluster,
    configuration,
    dashboard,
    dashboard_files,
    identity,
    observability,
    users,
)
from cfs_cluster.api.errors import install_error_handlers, render
from cfs_cluster.api.frontdoor import HEARTBEAT, FrontDoor
from cfs_cluster.api.routes import RouteTable
from cfs_cluster.cluster.node import Node
from cfs_cluster.errors import CfsError
from cfs_cluster.security.roles import ROUTE_ROLES
from cfs_cluster.security.tokens import TokenService

__all__ = ["create_app"]

log = logging.getLogger("cfs.api")


def create_app(node: Node) -> FrontDoor:
    """The FastAPI app behind the front door; the lifespan starts and stops the node."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await node.start()
        try:
            yield
        finally:
            await node.stop()

    # /docs and /redoc with Swagger UI and ReDoc served by the node itself (the package ships
    # them; MIT, Swagger UI Apache-2.0): an air-gapped plant network has no CDN to load from.
    app = FastAPIOffline(
        title="cfs_cluster — Client Failover Service",
        version=__version__,
        lifespan=lifespan,
        redirect_slashes=False,
        # Swagger UI's default would show a badge loaded from validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.node = node
    node.auth.on_failure = node.metrics.observe_auth_failure  # cfs_auth_failures_total
    node.auth.tokens = TokenService(
        lambda: node.replicator.state, node.settings.security.token_lifetime
    )  # Bearer tokens (issue 5 §2)
    install_error_handlers(app)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("Unexpected error on %s %s", request.method, request.url.path)
        return render(CfsError(f"Internal error: {type(exc).__name__}"))

    app.add_exception_handler(Exception, on_unexpected)
    app.include_router(clientfailover.router)
    app.include_router(cluster.router)
    app.include_router(cluster.internal_router)
    app.include_router(users.router)
    app.include_router(configuration.router)
    app.include_router(observability.router)
    app.include_router(backup.router)
    app.include_router(clients.router)
    app.include_router(identity.router)
    app.include_router(identity.admin_router)
    app.include_router(dashboard_files.router)
    app.include_router(dashboard.router)

    return FrontDoor(app, node, served_routes(app))


def served_routes(app: FastAPI) -> RouteTable:
    """The routes ``app`` serves; refused unless each has exactly its row in roles.ROUTE_ROLES.

    A route added without deciding its role, or a row left behind by a removed route, stops
    the node here rather than being served with a guessed role."""
    served = route_list(app)
    decided = Counter((method, template) for method, template, _ in ROUTE_ROLES)
    if decided != Counter(served):
        missing = sorted(set(served) - set(decided))
        stale = sorted(set(decided) - set(served))
        twice = sorted(route for route, rows in decided.items() if rows > 1)
        raise RuntimeError(
            f"roles.ROUTE_ROLES: no row for {missing}; no route for {stale}; twice: {twice}."
        )
    return RouteTable(served, first=HEARTBEAT)


def route_list(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path template) ``app`` answers."""
    served = [
        (method, context.path)
        for context in iter_route_contexts(app.routes)  # included routers are nested objects
        if context.path is not None  # a route without a path or methods is never reached
        for method in context.methods or ()
    ]
    # A mount of static files (the offline API docs' assets) serves one file name below it.
    served += [
        (method, f"{route.path}/{{file}}")
        for route in app.routes
        if isinstance(route, Mount)
        for method in ("GET", "HEAD")
    ]
    return served
