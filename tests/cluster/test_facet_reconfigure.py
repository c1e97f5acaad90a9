"""A Primary keeps its role through reconfiguration (issue 19; spec §4.6, §5.3 item 6, §5.4).

Two standalone facet apps (the two adapters of a redundant pair) run in-process behind
``httpx.ASGITransport``, each with its real ``AgentRuntime``, against three real `cfs serve`
processes with users (tests/support/clusterkit.py). Adapter A, in each mode in turn, is Primary;
adapter B, Hot at score 100, waits as Secondary. A is then reconfigured through the seed's own
``PATCH api/v1/configuration/System/ClientFailover/{id}``, one reloadable field after another
(Mode, FailoverTimeout, credentials, Endpoint, ValidateEndpointCertificate). After each change A
must still be Primary with the same grant epoch, report its primary score (100 whatever the
mode), and neither adapter may see a role change. Finally B is forced Primary by a role
override, and the Mode recorded while A was Primary takes effect.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.clusterkit import Cluster

from cfs_cluster.agent import RoleChange
from cfs_cluster.facet.app import create_app
from cfs_cluster.facet.runtime import AgentRuntime

pytestmark = pytest.mark.cluster

CONFIG = "/api/v1/configuration/System/ClientFailover"
STATE = "/api/v1/diagnostics/FailoverState"
ROOT = ("root", "root-password")
USERS = (("adapter1", "password-1"), ("adapter2", "password-2"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    env = {"CFS_BOOTSTRAP_ADMIN": ":".join(ROOT)}
    with Cluster(tmp_path_factory.mktemp("facet-reconfigure"), env=env) as running:
        _add_users(running)
        yield running


def _add_users(cluster: Cluster) -> None:
    url = cluster.nodes[0].url + "/api/v1/users"
    deadline = time.monotonic() + 30
    for name, password in USERS:
        body = {"name": name, "password": password, "role": "users"}
        while True:
            response = httpx.post(url, json=body, auth=ROOT, timeout=5)
            if response.status_code in (201, 409):
                break
            assert time.monotonic() < deadline, response.text  # the bootstrap admin is late
            time.sleep(0.2)


class Adapter:
    """One facet app (an adapter's REST port) and every local role change its agent made."""

    def __init__(self, client: httpx.AsyncClient, runtime: AgentRuntime) -> None:
        self.client = client
        self.runtime = runtime
        self.changes: list[RoleChange] = []

    async def state(self) -> dict[str, Any]:
        response = await self.client.get(STATE)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@asynccontextmanager
async def adapter(data_dir: Path) -> AsyncIterator[Adapter]:
    changes: list[RoleChange] = []
    runtime = AgentRuntime(session_id=f"{data_dir.name}.facet-test", on_role_change=changes.append)
    app = create_app(data_dir, runtime=runtime)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://adapter:5590") as client,
    ):
        made = Adapter(client, runtime)
        made.changes = changes
        yield made


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _config(cluster: Cluster, group: str, mode: str, node: int, user: int) -> dict[str, Any]:
    """The seed's example configuration with the cluster's endpoint and a short timeout."""
    name, password = USERS[user]
    return {
        "Id": "FailoverConfiguration1",
        "FailoverGroupId": group,
        "Name": "NameExample",
        "Description": "DescriptionExample",
        "FailoverTimeout": "00:00:15",
        "Mode": mode,
        "Endpoint": cluster.nodes[node].url + "/api/v1/clientfailover",
        "UserName": name,
        "Password": password,
        "TokenEndpoint": "http://token.com",
        "ValidateEndpointCertificate": False,
    }


OTHER_MODES = {"Hot": ("Cold", "Warm"), "Warm": ("Hot", "Cold"), "Cold": ("Warm", "Hot")}


@pytest.mark.parametrize("mode", ["Hot", "Warm", "Cold"])
def test_a_primary_keeps_its_role_through_every_reload(
    cluster: Cluster, tmp_path: Path, mode: str
) -> None:
    asyncio.run(_keeps_its_role(cluster, tmp_path, mode))


async def _keeps_its_role(cluster: Cluster, tmp_path: Path, mode: str) -> None:
    group = f"Reconfigure{mode}"
    sessions = f"{cluster.nodes[2].url}/api/v1/clientfailover/groups/{group}/clientsessions"
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(adapter(tmp_path / "a"))
        b = await stack.enter_async_context(adapter(tmp_path / "b"))
        cfs = await stack.enter_async_context(httpx.AsyncClient(timeout=5, auth=ROOT))

        async def session(adapter: Adapter) -> dict[str, Any]:
            response = await cfs.get(f"{sessions}/{adapter.runtime.session_id}")
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body

        async def heartbeat_time(adapter: Adapter) -> str | None:
            response = await cfs.get(f"{sessions}/{adapter.runtime.session_id}")
            if response.status_code == 404:  # not registered yet
                return None
            hb = response.json()["Heartbeat"]
            return None if hb is None else str(hb["HeartbeatTime"])

        async def next_heartbeat(adapter: Adapter, timeout: float) -> None:
            """Wait until the service has received another heartbeat from ``adapter``."""
            before = await heartbeat_time(adapter)
            await wait_for(
                lambda: _differs(heartbeat_time(adapter), before), timeout, "a heartbeat"
            )

        config = _config(cluster, group, mode, node=0, user=0)
        put = await a.client.put(CONFIG, content=json.dumps([config]))
        assert put.status_code == 200, put.text
        await wait_for(lambda: _role_is(a, "Primary"), 15, "A to become Primary")
        hot = {**_config(cluster, group, "Hot", node=1, user=1), "Id": "B"}
        assert (await b.client.post(CONFIG, json=hot)).status_code == 201
        await next_heartbeat(b, 15)
        assert (await session(b))["Heartbeat"]["FailoverScore"] == 100.0
        assert (await b.state())["Role"] == "Secondary"
        epoch = (await a.state())["Epoch"]
        a.changes.clear()
        b.changes.clear()

        first, second = OTHER_MODES[mode]
        item = f"{CONFIG}/FailoverConfiguration1"
        changes: list[dict[str, Any]] = [
            {"Mode": first},
            {"FailoverTimeout": "00:00:20"},
            {"UserName": USERS[1][0], "Password": USERS[1][1]},
            {"Endpoint": cluster.nodes[1].url + "/api/v1/clientfailover"},
            {"ValidateEndpointCertificate": True},
            {"Mode": second, "Endpoint": cluster.nodes[2].url + "/api/v1/clientfailover"},
        ]
        for change in changes:
            patch = await a.client.patch(item, json=change)
            assert patch.status_code == 200, patch.text
            await next_heartbeat(a, 15)
            seen = await session(a)
            assert (seen["Role"], seen["Heartbeat"]["FailoverScore"]) == (1, 100.0), change
            assert a.changes == [], change  # not even a local Primary → Secondary → Primary
            state = await a.state()
            assert (state["Role"], state["FailoverStatus"], state["Epoch"]) == (
                "Primary",
                "100",
                epoch,
            ), change
            assert state["EndpointStatus"] == "Connected", state
        # Give B one more heartbeat: with A's score it must stay Secondary.
        await next_heartbeat(b, 15)
        assert (await b.state())["Role"] == "Secondary"
        assert a.changes == b.changes == []
        state = await a.state()
        assert (state["Mode"], state["AppliedMode"]) == (second, mode)  # recorded, not applied

        # Forced to Secondary, A applies the Mode recorded while it was Primary (spec §5.4).
        override = await cfs.post(
            f"{sessions}/{b.runtime.session_id}/roleoverride", json={"Value": "Primary"}
        )
        assert override.status_code == 200, override.text
        await wait_for(lambda: _role_is(b, "Primary"), 15, "B to be forced Primary")
        await wait_for(lambda: _applied(a, second), 15, "A to apply the recorded mode")
        assert [(c.old.name, c.new.name) for c in a.changes] == [("Primary", "Secondary")]
        if second == "Cold":
            await next_heartbeat(a, 15)
            assert (await a.state())["FailoverStatus"] == "1"  # a cold secondary on standby


async def _differs(value: Awaitable[str | None], before: str | None) -> bool:
    return await value != before


async def _role_is(adapter: Adapter, role: str) -> bool:
    return (await adapter.state())["Role"] == role


async def _applied(adapter: Adapter, mode: str) -> bool:
    state = await adapter.state()
    return bool(state["Role"] == "Secondary" and state["AppliedMode"] == mode)
