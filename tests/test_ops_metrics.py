"""Operations metrics: `cfs_auth_failures_total{reason}` counts refused requests by reason.

One in-process node (real front door, one-member Raft) through httpx's ASGI transport; the
metrics are read back through `GET /metrics` with the Prometheus text parser.
"""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.clusterkit import free_ports

from cfs_cluster.api.app import create_app
from cfs_cluster.cluster.node import Node
from cfs_cluster.errors import Unauthorized
from cfs_cluster.ops.metrics import AUTH_FAILURE_REASONS
from cfs_cluster.security.auth import Authenticator
from cfs_cluster.settings import SecuritySettings, Settings

ADMIN = ("root", "metrics-admin-pw")
GROUPS = "/api/v1/clientfailover/groups"


def basic(name: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}


def _settings(tmp_path: Path) -> Settings:
    api, raft = free_ports(2)
    security = SecuritySettings(bootstrap_admin=f"{ADMIN[0]}:{ADMIN[1]}", failures_before_backoff=3)
    return Settings(
        node_id="n1",
        api_host="127.0.0.1",
        api_port=api,
        raft_address=f"127.0.0.1:{raft}",
        peers=(),
        data_dir=tmp_path / "n1",
        dev=True,
        security=security,
    )


def _auth_failures(text: str) -> dict[str, float]:
    for family in text_string_to_metric_families(text):
        if family.name == "cfs_auth_failures":
            return {
                s.labels["reason"]: s.value for s in family.samples if s.name.endswith("_total")
            }
    raise AssertionError("cfs_auth_failures_total is not exported")


async def _scenario(tmp_path: Path) -> None:
    node = Node(_settings(tmp_path))
    app = create_app(node)
    await node.start()
    try:
        transport = httpx.ASGITransport(app=app, client=("10.1.1.1", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://cfs") as client:
            deadline = time.monotonic() + 15
            while not node.users():  # the bootstrap administrator is applied through Raft
                assert time.monotonic() < deadline, "bootstrap administrator never applied"
                await asyncio.sleep(0.02)
            admin = basic(*ADMIN)
            start = _auth_failures((await client.get("/metrics", headers=admin)).text)
            assert start == dict.fromkeys(AUTH_FAILURE_REASONS, 0.0)

            assert (await client.get(GROUPS)).status_code == 401
            user = {"Name": "plc1", "Password": "plc1-pw", "Role": "users"}
            assert (await client.post("/api/v1/users", json=user, headers=admin)).status_code == 201
            plc = basic("plc1", "plc1-pw")
            assert (await client.get("/api/v1/users", headers=plc)).status_code == 403
            assert (await client.get("/api/v1/cluster/backup", headers=plc)).status_code == 403
            wrong = basic(*ADMIN[:1], "wrong")
            for _ in range(3):
                assert (await client.get(GROUPS, headers=wrong)).status_code == 401
            assert (await client.get(GROUPS, headers=wrong)).status_code == 429  # backing off
            # The administrator's verified (cached) credentials never wait for a back-off.
            assert (await client.get(GROUPS, headers=admin)).status_code == 200

        # Scraped from another source address: the back-off is per source.
        other = httpx.ASGITransport(app=app, client=("10.2.2.2", 1234))
        async with httpx.AsyncClient(transport=other, base_url="http://cfs") as client:
            text = (await client.get("/metrics", headers=admin)).text
        assert _auth_failures(text) == {
            "no_credentials": 1.0,
            "bad_credentials": 3.0,
            "forbidden": 2.0,
            "backoff": 1.0,
        }
    finally:
        await node.stop()


def test_auth_failures_are_counted_by_reason(tmp_path: Path) -> None:
    asyncio.run(_scenario(tmp_path))


def test_a_refusal_calls_the_hook_once_and_an_open_node_never() -> None:
    reasons: list[str] = []
    auth = Authenticator(dict, SecuritySettings(auth="off"))
    auth.on_failure = reasons.append
    asyncio.run(auth.check("GET", GROUPS, None, "10.0.0.1"))
    assert reasons == []
    auth = Authenticator(dict, SecuritySettings(auth="required"))
    auth.on_failure = reasons.append
    with pytest.raises(Unauthorized):
        asyncio.run(auth.check("GET", GROUPS, None, "10.0.0.1"))
    assert reasons == ["no_credentials"]
