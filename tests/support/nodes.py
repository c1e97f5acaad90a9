"""A single in-process node behind httpx's ASGI transport, and the helpers its tests share."""

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from cfs_cluster.api.app import create_app
from cfs_cluster.cluster.node import Node
from cfs_cluster.settings import SecuritySettings, Settings
from support.clusterkit import free_ports

ADMIN = ("root", "s3cret-admin")
ADAPTER = ("adapter", "adapter-pw")
GROUPS = "/api/v1/clientfailover/groups"


def basic(name: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def settings_for(tmp_path: Path, **security: Any) -> Settings:
    """A --dev node on loopback: open unless given a bootstrap administrator (as the CLI)."""
    security.setdefault("auth", "required" if security.get("bootstrap_admin") else "off")
    api, raft = free_ports(2)
    return Settings(
        node_id="n1",
        api_host="127.0.0.1",
        api_port=api,
        raft_address=f"127.0.0.1:{raft}",
        peers=(),
        data_dir=tmp_path / "n1",
        dev=True,
        security=SecuritySettings(**security),
    )


@asynccontextmanager
async def single_node(settings: Settings) -> AsyncIterator[tuple[Node, httpx.AsyncClient]]:
    node = Node(settings)
    app = create_app(node)
    await node.start()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cfs") as client:
            await until(lambda: _ready(client), "node ready")
            yield node, client
    finally:
        await node.stop()


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(what)


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert {"OperationId", "Error", "Reason", "Resolution"} <= body.keys()
    return body


# --------------------------------------------------------------------------- unit
