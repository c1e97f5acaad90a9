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
from support.omf_receiver import OmfReceiver

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
async def adapter(data_dir: Path, health_interval: float = 60.0) -> AsyncIterator[Adapter]:
    changes: list[RoleChange] = []
    app = create_app(
        data_dir,
        session_id=f"{data_dir.name}.facet-test",
        on_role_change=changes.append,
        health_interval=health_interval,
    )
    runtime = app.state.facet.runtime
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


def test_endpoint_problems_are_visible_in_failover_state_and_health(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Refused credentials and an unreachable endpoint show in FailoverState (with the last
    error and the next attempt, FailoverTimeout/2 later) and as DeviceInError in the failover
    health, which egresses through the OMF sender to the strict receiver (spec §5.3, §5.9)."""
    with OmfReceiver() as omf:
        asyncio.run(_visible(cluster, tmp_path, omf))


async def _visible(cluster: Cluster, tmp_path: Path, omf: OmfReceiver) -> None:
    group = "Visibility"
    async with adapter(tmp_path / "v", health_interval=0.5) as a:
        base = f"{a.runtime.session_id}.Failover"
        health = await a.client.post(
            "/api/v1/configuration/System/HealthEndpoints",
            json={"Id": "pi", "Endpoint": omf.url, "Buffering": "None"},
        )
        assert health.status_code == 201, health.text
        bad = {**_config(cluster, group, "Hot", node=0, user=0), "Password": "wrong"}
        assert (await a.client.put(CONFIG, json=bad)).status_code == 200
        await wait_for(lambda: _status_is(a, "CredentialsRefused"), 15, "refused credentials")
        # Only the first failure is looked at: the cluster then rate-limits failed logins (429).
        state = await a.state()
        assert state["Role"] == "Secondary" and "401" in state["LastError"], state
        assert _seconds_between(state["LastErrorTime"], state["NextAttemptTime"]) == (
            pytest.approx(7.5, abs=1.0)  # FailoverTimeout/2, as the adapter framework retries
        )
        assert await _omf_wait(omf, lambda r: _statuses(r, base)[-1:] == ["DeviceInError"], 10)

        # The right password: connected at once (no waiting for the retry), Primary, Good.
        item = f"{CONFIG}/FailoverConfiguration1"
        fixed = await a.client.patch(item, json={"Password": USERS[0][1]})
        assert fixed.status_code == 200
        await wait_for(lambda: _role_is(a, "Primary"), 5, "Primary with the right password")
        assert (await a.state())["EndpointStatus"] == "Connected"
        assert await _omf_wait(omf, lambda r: _statuses(r, base)[-1:] == ["Good"], 10)
        assert await _omf_wait(omf, lambda r: ("Primary", 100.0) in _failover(r, base), 10)

        # Nothing listens there: Unreachable, and the role lapses to Secondary with its grant.
        nowhere = "http://127.0.0.1:9/api/v1/clientfailover"
        assert (await a.client.patch(item, json={"Endpoint": nowhere})).status_code == 200
        await wait_for(lambda: _status_is(a, "Unreachable"), 15, "an unreachable endpoint")
        await wait_for(lambda: _role_is(a, "Secondary"), 25, "the grant to lapse")
        assert await _omf_wait(omf, lambda r: ("Secondary", 100.0) in _failover(r, base), 10)
        assert await _omf_wait(
            omf, lambda r: len(_values(r, f"{base}.NextHealthMessageExpected")) >= 3, 10
        )
        assert (await a.client.delete(CONFIG)).status_code == 204
    # A graceful stop says Shutdown; the asset is the adapter framework's FailoverHealth.
    assert _statuses(omf, base)[-1] == "Shutdown"
    asset = [
        v
        for req in omf.requests
        if req.status == 202 and req.headers.get("messagetype") == "data"
        for item in req.body
        if item.get("typeid") == "FailoverHealth"
        for v in item["values"]
    ]
    assert asset[0]["Name"] == base and asset[0]["Description"] == "Failover Health"
    assert {"Failover Group ID": group, "Failover Mode": "Hot"}.items() <= asset[1].items()
    assert all(r.status == 202 for r in omf.requests), [r for r in omf.requests if r.status != 202]


async def _status_is(adapter: Adapter, status: str) -> bool:
    return (await adapter.state())["EndpointStatus"] == status


def _seconds_between(first: str, second: str) -> float:
    from cfs_cluster.protocol.wire import TICKS_PER_SECOND, parse_datetime

    ticks = parse_datetime(second, "b") - parse_datetime(first, "a")
    return ticks / TICKS_PER_SECOND


def _values(omf: OmfReceiver, container: str) -> list[dict[str, Any]]:
    """A stream's values in time order. Reads the store directly: predicates of
    ``OmfReceiver.wait_for`` run under its lock, which ``series`` would take again."""
    series = omf.store.values.get(container, {})
    return [v for _, vs in sorted(series.items()) for v in vs]


def _statuses(omf: OmfReceiver, base: str) -> list[str]:
    return [v["DeviceStatus"] for v in _values(omf, f"{base}.DeviceStatus")]


def _failover(omf: OmfReceiver, base: str) -> list[tuple[str, float]]:
    values = _values(omf, f"{base}.FailoverStatus")
    return [(v["FailoverRole"], v["FailoverScore"]) for v in values]


async def _omf_wait(
    omf: OmfReceiver, predicate: Callable[[OmfReceiver], bool], timeout: float
) -> bool:
    """The receiver's blocking wait, off the event loop the facet egresses from."""
    return await asyncio.to_thread(omf.wait_for, predicate, timeout)
