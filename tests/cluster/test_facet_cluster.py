"""The facet drives a real failover agent against a real 3-node cluster (seed 002; spec §5.3).

Two standalone facet apps (two adapters of one redundant pair) run in-process on one event loop
behind ``httpx.ASGITransport``, each with its real ``AgentRuntime``; the cluster is three
`cfs serve` processes (tests/support/clusterkit.py). Configured with the seed's own example (only the
Endpoint and a short FailoverTimeout changed), the first adapter becomes Primary; a PATCH of the
timeout keeps its session and its role; DELETE unregisters it and the other takes over.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import pytest
from support.clusterkit import Cluster

from cfs_cluster.facet.app import create_app
from cfs_cluster.facet.runtime import AgentRuntime

pytestmark = pytest.mark.cluster

CONFIG = "/api/v1/configuration/System/ClientFailover"
STATE = "/api/v1/diagnostics/FailoverState"
GROUP = "FailoverGroup1"
SEED_EXAMPLE = {
    "Id": "FailoverConfiguration1",
    "FailoverGroupId": GROUP,
    "Name": "NameExample",
    "Description": "DescriptionExample",
    "FailoverTimeout": "00:01:00",
    "Mode": "hot",
    "Endpoint": "http://test-endpoint.com",
    "UserName": "UserName1",
    "Password": "Password1",
    "TokenEndpoint": "http://token.com",
    "ValidateEndpointCertificate": False,
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("facet-cluster")) as running:
        yield running


class Adapter:
    """One facet app (an adapter's REST port) and the session id its agent uses."""

    def __init__(self, client: httpx.AsyncClient, runtime: AgentRuntime) -> None:
        self.client = client
        self.runtime = runtime

    async def role(self) -> str:
        response = await self.client.get(STATE)
        assert response.status_code == 200, response.text
        role: str = response.json()["Role"]
        return role


@asynccontextmanager
async def adapter(data_dir: Path) -> AsyncIterator[Adapter]:
    runtime = AgentRuntime(session_id=f"{data_dir.name}.facet-test")
    app = create_app(data_dir, runtime=runtime)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://adapter:5590") as client,
    ):
        yield Adapter(client, runtime)


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_configuration_drives_the_agent(cluster: Cluster, tmp_path: Path) -> None:
    asyncio.run(_scenario(cluster, tmp_path))


async def _scenario(cluster: Cluster, tmp_path: Path) -> None:
    endpoint = cluster.nodes[0].url + "/api/v1/clientfailover"
    sessions_url = f"{cluster.nodes[1].url}/api/v1/clientfailover/groups/{GROUP}/clientsessions"
    config = {**SEED_EXAMPLE, "Endpoint": endpoint, "FailoverTimeout": "00:00:15"}
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(adapter(tmp_path / "a"))
        b = await stack.enter_async_context(adapter(tmp_path / "b"))
        cfs = await stack.enter_async_context(httpx.AsyncClient(timeout=5))

        async def registered() -> set[str]:
            response = await cfs.get(sessions_url)
            return {s["Id"] for s in response.json()} if response.status_code == 200 else set()

        # The seed's curl: PUT the array form. The first adapter in the group becomes Primary.
        put = await a.client.put(CONFIG, content=json.dumps([config]))
        assert put.status_code == 200, put.text
        await wait_for(lambda: _is(a, "Primary"), 10, "adapter a to become Primary")
        assert (await b.client.post(CONFIG, json=config)).status_code == 201
        await wait_for(
            lambda: _contains(registered, {a.runtime.session_id, b.runtime.session_id}),
            10,
            "both sessions registered",
        )
        assert await b.role() == "Secondary"

        # A new FailoverTimeout reloads the agent in place: same session, still Primary.
        patch = await a.client.patch(
            f"{CONFIG}/FailoverConfiguration1", json={"FailoverTimeout": 20}
        )
        assert patch.status_code == 200 and patch.json()["FailoverTimeout"] == "00:00:20"
        await a.runtime.started()
        await wait_for(lambda: _is(a, "Primary"), 10, "adapter a to be Primary after the PATCH")
        assert a.runtime.session_id in await registered()
        assert await b.role() == "Secondary"

        # DELETE unregisters: the session leaves the group and the other adapter takes over.
        assert (await a.client.delete(CONFIG)).status_code == 204
        assert a.runtime.session_id not in await registered()
        assert await a.role() == "Secondary"
        await wait_for(lambda: _is(b, "Primary"), 10, "adapter b to take over")
        assert (await a.client.get(CONFIG)).json() == []
    # Shutting the facet down unregisters b too (the adapter framework's graceful stop).
    response = httpx.get(sessions_url, timeout=5)
    assert response.status_code == 200 and response.json() == []


async def _is(adapter: Adapter, role: str) -> bool:
    return await adapter.role() == role


async def _contains(registered: Callable[[], Awaitable[set[str]]], ids: set[str]) -> bool:
    return ids <= await registered()
