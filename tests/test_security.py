"""Security: Basic auth and roles, the user store, back-off, credential cache, heartbeat rate limit.

In-process single-node tests drive the real front door and Raft (one member) through httpx's
ASGI transport; one test starts a real 3-node cluster with CFS_BOOTSTRAP_ADMIN.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from support.clusterkit import Cluster
from support.nodes import (
    ADAPTER,
    ADMIN,
    GROUPS,
    assert_error,
    basic,
    run,
    settings_for,
    single_node,
    until,
)

from cfs_cluster import engine
from cfs_cluster.api.routes import RouteTable
from cfs_cluster.cluster.node import Node
from cfs_cluster.errors import TooManyRequests
from cfs_cluster.security import passwords, roles
from cfs_cluster.security.ratelimit import HeartbeatLimiter
from cfs_cluster.settings import FailoverSettings


def test_password_hash_roundtrip_and_salt() -> None:
    first, second = passwords.hash_password("pw"), passwords.hash_password("pw")
    assert first != second  # salted
    assert passwords.verify_password("pw", first)
    assert not passwords.verify_password("pW", first)
    assert not passwords.verify_password("pw", "garbage")
    assert not passwords.verify_password("pw", "scrypt$x$y$z$!!$!!")


@pytest.mark.parametrize(
    ("method", "path", "role"),
    [
        ("GET", "/healthz", None),
        ("GET", "/readyz", None),
        ("POST", "/_cluster/heartbeats", roles.MEMBERS),
        ("GET", "/api/v1/cluster", roles.USERS),
        ("POST", "/api/v1/ClientFailover/Groups", roles.USERS),
        ("DELETE", "/api/v1/clientfailover/groups/g1", roles.ADMINISTRATORS),
        ("DELETE", "/api/v1/clientfailover/groups/g1/clientsessions/s1", roles.USERS),
        ("POST", "/api/v1/clientfailover/groups/g/clientsessions/s/heartbeat", roles.USERS),
        (
            "POST",
            "/api/v1/clientfailover/groups/g/clientsessions/s/RoleOverride/",
            roles.ADMINISTRATORS,
        ),
        ("PUT", "/api/v1/configuration/logging", roles.ADMINISTRATORS),
        ("GET", "/api/v1/Users", roles.ADMINISTRATORS),
        ("POST", "/api/v1/cluster/members", roles.ADMINISTRATORS),
        ("GET", "/openapi.json", roles.USERS),
        ("GET", "/", None),
        ("GET", "/ui", None),
        ("GET", "/UI/app.js", None),
        ("GET", "/api/v1/dashboard/me", None),
        ("GET", "/api/v1/dashboard/groups", roles.USERS),
        ("GET", "/api/v1/dashboard/events", roles.USERS),
    ],
)
def test_required_role(method: str, path: str, role: str | None) -> None:
    routes = RouteTable((method, template) for method, template, _ in roles.ROUTE_ROLES)
    match = routes.match(path.encode())
    assert match is not None
    assert roles.required_role(method, match.route.template) == role


def test_user_commands_are_idempotent_and_protect_the_last_admin() -> None:
    state = engine.ClusterState()
    boot = engine.AddUser("b", "root", roles.ADMINISTRATORS, "h1", if_no_users=True)
    assert engine.apply(state, boot).code == engine.Code.CREATED
    again = engine.AddUser("b2", "other", roles.ADMINISTRATORS, "h2", if_no_users=True)
    assert engine.apply(state, again).code == engine.Code.OK
    assert list(state.users) == ["root"]
    assert engine.apply(state, engine.RemoveUser("r", "root")).code == engine.Code.CONFLICT
    demote = engine.UpdateUser("d", "root", role=roles.USERS)
    assert engine.apply(state, demote).code == engine.Code.CONFLICT
    missing = engine.UpdateUser("m", "nobody", password_hash="x")
    assert engine.apply(state, missing).code == engine.Code.USER_NOT_FOUND


def test_limiter_lets_the_pending_confirmation_chain_through() -> None:
    now = [0.0]
    limiter = HeartbeatLimiter(interval=1.0, burst=10, clock=lambda: now[0])
    for _ in range(10):
        limiter.check("g", "s", pending=False)
    with pytest.raises(TooManyRequests) as refused:
        limiter.check("g", "s", pending=False)
    assert refused.value.retry_after == pytest.approx(1.0)
    for _ in range(10):  # a PendingPrimary may borrow a whole burst even from an empty bucket
        limiter.check("g", "s", pending=True)
    with pytest.raises(TooManyRequests):
        limiter.check("g", "s", pending=True)
    now[0] += 30.0
    limiter.check("g", "s", pending=False)  # refilled


# --------------------------------------------------------------------------- in-process node


def test_auth_off_stays_off_when_users_exist(tmp_path: Path) -> None:
    """``--auth off`` (loopback only) checks nothing, even after a user was created: there is
    no mode that switches itself on (the removed ``auto``) and so no window of openness."""

    async def scenario() -> None:
        async with single_node(settings_for(tmp_path)) as (node, client):
            assert (await client.get("/api/v1/cluster")).status_code == 200
            created = await client.post(
                "/api/v1/users",
                json={"Name": ADMIN[0], "Password": ADMIN[1], "Role": "Administrators"},
            )
            assert created.status_code == 201, created.text
            assert (await client.get("/api/v1/cluster")).status_code == 200
            # /readyz needs no credentials either (it may answer 503 for a moment while the
            # node applies what it just committed: wait for 200, bounded).
            await until(lambda: _ready_without_credentials(client), "ready without credentials")
            assert node.auth.hashes_computed == 0

    run(scenario())


async def _ready_without_credentials(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


def test_roles_401_403_and_user_management(tmp_path: Path) -> None:
    async def scenario() -> None:
        settings = settings_for(tmp_path, bootstrap_admin=f"{ADMIN[0]}:{ADMIN[1]}")
        async with single_node(settings) as (node, client):
            await until(lambda: _has_users(node), "bootstrap admin")
            admin, adapter = basic(*ADMIN), basic(*ADAPTER)
            assert_error(await client.get(GROUPS), 401)
            assert_error(await client.get(GROUPS, headers=basic(ADMIN[0], "wrong")), 401)
            add = {"name": ADAPTER[0], "password": ADAPTER[1], "role": "users"}
            assert (await client.post("/api/v1/users", json=add, headers=admin)).status_code == 201
            assert_error(await client.post("/api/v1/users", json=add, headers=admin), 409)
            assert_error(await client.post("/api/v1/users", json=add, headers=adapter), 403)
            listed = (await client.get("/api/v1/users", headers=admin)).json()
            assert listed == [
                {"Name": "adapter", "Role": "users"},
                {"Name": "root", "Role": "administrators"},
            ]

            # An adapter creates a group and a session and heartbeats (lean path, authenticated).
            group = {"Id": "g1", "FailoverTimeout": "00:00:10"}
            assert (await client.post(GROUPS, json=group, headers=adapter)).status_code in (
                200,
                201,
            )
            sessions = f"{GROUPS}/g1/clientsessions"
            assert (
                await client.post(sessions, json={"Id": "s1"}, headers=adapter)
            ).status_code in (200, 201)
            beat = f"{sessions}/s1/heartbeat"
            assert_error(await client.post(beat, json={"FailoverScore": 1}), 401)
            answer = await client.post(beat, json={"FailoverScore": 1}, headers=adapter)
            assert answer.status_code == 200, answer.text

            # Role override and group deletion are for administrators.
            override = f"{sessions}/s1/roleoverride"
            body = {"Value": "Primary", "Period": "00:01:00"}
            assert_error(await client.post(override, json=body, headers=adapter), 403)
            assert (await client.post(override, json=body, headers=admin)).status_code == 200
            assert_error(await client.delete(f"{GROUPS}/g1", headers=adapter), 403)

            # A password change invalidates the cached credential at once.
            changed = await client.put(
                "/api/v1/users/adapter", json={"Password": "new-pw"}, headers=admin
            )
            assert changed.status_code == 200, changed.text
            assert_error(await client.get(GROUPS, headers=adapter), 401)
            assert (await client.get(GROUPS, headers=basic("adapter", "new-pw"))).status_code == 200
            assert_error(await client.delete("/api/v1/users/root", headers=admin), 409)
            assert (await client.delete("/api/v1/users/adapter", headers=admin)).status_code == 204
            assert_error(await client.get(GROUPS, headers=basic("adapter", "new-pw")), 401)
            assert_error(
                await client.put("/api/v1/users/nobody", json={"Role": "users"}, headers=admin), 404
            )
            assert_error(
                await client.post(
                    "/api/v1/users", json={"Name": "a:b", "Password": "x"}, headers=admin
                ),
                400,
            )
            assert_error(await client.post("/api/v1/users", content=b"[", headers=admin), 400)

    run(scenario())


async def _has_users(node: Node) -> bool:
    return bool(node.users())


def test_credential_cache_spares_the_hash_on_heartbeats(tmp_path: Path) -> None:
    async def scenario() -> None:
        settings = settings_for(tmp_path, bootstrap_admin=f"{ADMIN[0]}:{ADMIN[1]}")
        async with single_node(settings) as (node, client):
            await until(lambda: _has_users(node), "bootstrap admin")
            admin = basic(*ADMIN)
            await client.post(
                GROUPS, json={"Id": "g", "FailoverTimeout": "00:00:10"}, headers=admin
            )
            await client.post(f"{GROUPS}/g/clientsessions", json={"Id": "s"}, headers=admin)
            before = node.auth.hashes_computed
            for _ in range(50):
                response = await client.post(
                    f"{GROUPS}/g/clientsessions/s/heartbeat",
                    json={"FailoverScore": 1},
                    headers=admin,
                )
                assert response.status_code == 200
            assert node.auth.hashes_computed - before == 0

    run(scenario())


def test_backoff_after_repeated_failures(tmp_path: Path) -> None:
    async def scenario() -> None:
        settings = settings_for(
            tmp_path, bootstrap_admin=f"{ADMIN[0]}:{ADMIN[1]}", failures_before_backoff=3
        )
        async with single_node(settings) as (node, client):
            await until(lambda: _has_users(node), "bootstrap admin")
            wrong = basic(ADMIN[0], "nope")
            for _ in range(3):
                assert_error(await client.get(GROUPS, headers=wrong), 401)
            blocked = await client.get(GROUPS, headers=basic(*ADMIN))
            assert_error(blocked, 429)
            assert int(blocked.headers["retry-after"]) >= 1
            assert (await client.get("/healthz")).status_code == 200

    run(scenario())


def test_auth_required_without_users_refuses_everything_but_health(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with single_node(settings_for(tmp_path, auth="required")) as (_, client):
            assert_error(await client.get(GROUPS), 401)
            assert_error(
                await client.post("/api/v1/users", json={"Name": "x", "Password": "y"}), 401
            )
            assert (await client.get("/readyz")).status_code == 200

    run(scenario())


def test_heartbeat_rate_limit_keeps_the_pending_chain(tmp_path: Path) -> None:
    async def scenario() -> None:
        settings = settings_for(tmp_path, heartbeat_burst=10)
        settings = replace(settings, failover=FailoverSettings(heartbeat_rate_limit=60.0))
        async with single_node(settings) as (_, client):
            await client.post(GROUPS, json={"Id": "g", "FailoverTimeout": "00:00:30"})
            for sid in ("a", "b"):
                await client.post(f"{GROUPS}/g/clientsessions", json={"Id": sid})

            async def beat(sid: str, score: int, **held: int) -> httpx.Response:
                return await client.post(
                    f"{GROUPS}/g/clientsessions/{sid}/heartbeat",
                    json={"FailoverScore": score, **held},
                )

            assert (await beat("a", 1)).json()["Role"] in (2, "PendingPrimary")
            granted = (await beat("a", 1)).json()
            assert granted["Role"] in (1, "Primary")  # confirmed
            assert (await beat("b", 1)).status_code == 200
            # A higher score makes b the candidate: PendingPrimary until a is told Secondary.
            roles = [(await beat("b", 5)).json()["Role"]]
            # 12 immediate confirmations: more than the burst of 10 a non-pending session gets.
            for _ in range(12):
                response = await beat("b", 5)
                assert response.status_code == 200, response.text
                roles.append(response.json()["Role"])
            assert set(roles) <= {2, "PendingPrimary"}, roles
            assert (await beat("a", 1)).json()["Role"] in (0, "Secondary")
            # a acknowledges (as our agent does); only then may b be granted (P1).
            acked = await beat("a", 1, HeldRole=0, HeldEpoch=granted["Epoch"])
            assert acked.json()["Role"] in (0, "Secondary")
            promoted = await beat("b", 5)
            assert promoted.status_code == 200, promoted.text
            assert promoted.json()["Role"] in (1, "Primary")
            # Now Primary with an exhausted bucket: the limit applies again.
            limited = [(await beat("b", 5)).status_code for _ in range(11)]
            assert 429 in limited
            refused = await beat("b", 5)
            assert_error(refused, 429)
            assert int(refused.headers["retry-after"]) >= 1

    run(scenario())


def test_group_and_session_limits_answer_409_and_keep_state(tmp_path: Path) -> None:
    async def scenario() -> None:
        limits = FailoverSettings(max_groups=2, max_sessions_per_group=2)
        settings = replace(settings_for(tmp_path), failover=limits)
        async with single_node(settings) as (node, client):
            for gid in ("g1", "g2"):
                group = {"Id": gid, "FailoverTimeout": "00:00:30"}
                assert (await client.post(GROUPS, json=group)).status_code == 201
            third = await client.post(GROUPS, json={"Id": "g3", "FailoverTimeout": "00:00:30"})
            assert "--max-groups" in assert_error(third, 409)["Reason"]
            for sid in ("a", "b"):
                response = await client.post(f"{GROUPS}/g1/clientsessions", json={"Id": sid})
                assert response.status_code == 201
            extra = await client.post(f"{GROUPS}/g1/clientsessions", json={"Id": "c"})
            assert "--max-sessions-per-group" in assert_error(extra, 409)["Reason"]
            again = await client.post(f"{GROUPS}/g1/clientsessions", json={"Id": "a"})
            assert again.status_code == 200  # an adapter restarting re-registers as before
            assert sorted(node.replicator.state.groups) == ["g1", "g2"]
            assert sorted(node.replicator.state.groups["g1"].sessions) == ["a", "b"]

    run(scenario())


# --------------------------------------------------------------------------- real cluster


@pytest.mark.cluster
def test_three_node_cluster_with_bootstrap_admin(tmp_path: Path) -> None:
    env = {"CFS_BOOTSTRAP_ADMIN": f"{ADMIN[0]}:{ADMIN[1]}"}
    with Cluster(tmp_path, size=3, env=env) as cluster:
        client = cluster.client
        deadline = time.monotonic() + 15
        while client.get(cluster.urls[0] + "/api/v1/cluster").status_code != 401:
            assert time.monotonic() < deadline, "bootstrap admin never applied"
            time.sleep(0.05)
        admin = basic(*ADMIN)
        for url in cluster.urls:
            assert_error(client.get(url + GROUPS), 401)
            assert client.get(url + "/readyz").status_code == 200
        add = {"Name": ADAPTER[0], "Password": ADAPTER[1], "Role": "users"}
        assert (
            client.post(cluster.urls[1] + "/api/v1/users", json=add, headers=admin).status_code
            == 201
        )
        adapter = basic(*ADAPTER)
        for url in cluster.urls:  # users replicate like everything else: wait until applied
            while client.get(url + GROUPS, headers=adapter).status_code != 200:
                assert time.monotonic() < deadline + 15, f"user never replicated to {url}"
                time.sleep(0.05)
        group = {"Id": "g", "FailoverTimeout": "00:00:10"}
        assert client.post(cluster.urls[2] + GROUPS, json=group, headers=adapter).status_code in (
            200,
            201,
        )
        sessions = f"{GROUPS}/g/clientsessions"
        assert client.post(
            cluster.urls[0] + sessions, json={"Id": "s"}, headers=adapter
        ).status_code in (200, 201)
        for url in cluster.urls:  # followers relay; every node knows the replicated users
            beat = client.post(
                f"{url}{sessions}/s/heartbeat", json={"FailoverScore": 1}, headers=adapter
            )
            assert beat.status_code == 200, beat.text
        override = {"Value": "Primary", "Period": "00:01:00"}
        assert_error(
            client.post(
                f"{cluster.urls[1]}{sessions}/s/roleoverride", json=override, headers=adapter
            ),
            403,
        )
        ok = client.post(
            f"{cluster.urls[1]}{sessions}/s/roleoverride", json=override, headers=admin
        )
        assert ok.status_code == 200, ok.text


def test_cli_users_against_the_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cfs_cluster.cli.main import main

    env = {"CFS_BOOTSTRAP_ADMIN": f"{ADMIN[0]}:{ADMIN[1]}"}
    with Cluster(tmp_path, size=3, env=env) as cluster:
        url = cluster.urls[2]
        creds = ["--url", url, "--user", ADMIN[0], "--password", ADMIN[1]]
        deadline = time.monotonic() + 15
        while main(["users", *creds, "list"]) != 0:
            assert time.monotonic() < deadline, "bootstrap admin never applied"
            time.sleep(0.1)
        assert main(["users", *creds, "add", "plc1", "--new-password", "pw1"]) == 0
        assert main(["users", *creds, "passwd", "plc1", "--new-password", "pw2"]) == 0
        capsys.readouterr()
        assert main(["users", *creds, "list"]) == 0
        assert capsys.readouterr().out.splitlines() == ["plc1\tusers", "root\tadministrators"]
        assert cluster.client.get(url + GROUPS, headers=basic("plc1", "pw2")).status_code == 200
        assert (
            main(["users", "--url", url, "--user", "plc1", "--password", "pw2", "remove", "root"])
            == 1
        )
        assert main(["users", *creds, "remove", "plc1"]) == 0


def test_self_signed_certificate_has_the_node_names(tmp_path: Path) -> None:
    import datetime as dt

    from cryptography import x509

    from cfs_cluster.security import tls

    settings = replace(settings_for(tmp_path, tls_self_signed=True), api_host="cfs-a.plant.local")
    pair = tls.certificate_files(settings)
    assert pair is not None
    cert = x509.load_pem_x509_certificate(pair[0].read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "cfs-a.plant.local" in names.get_values_for_type(x509.DNSName)
    assert pair[1].stat().st_mode & 0o077 == 0
    assert tls.certificate_files(settings) == pair  # reused, not regenerated
    assert tls.expiry_warning(pair[0]) is None
    late = tls.expiry(pair[0]) - dt.timedelta(days=3)
    assert "expires" in (tls.expiry_warning(pair[0], now=late) or "")


@pytest.mark.cluster
def test_self_signed_cluster_relays_through_followers(tmp_path: Path) -> None:
    """Each node generates its own certificate; the members publish them in the replicated
    member table and the relays pin them, so a heartbeat sent to a follower reaches the
    leader over verified HTTPS without a shared CA."""
    with Cluster(tmp_path, size=3, extra_args=["--tls", "self-signed"]) as cluster:
        client = cluster.client
        assert all(url.startswith("https://") for url in cluster.urls)
        leader = cluster.leader_index()
        follower = next(i for i in range(3) if i != leader)
        deadline = time.monotonic() + 15
        while True:  # every member's certificate applied on the follower: its relay trusts them
            members = client.get(cluster.urls[follower] + "/api/v1/cluster").json()["Members"]
            if all(m.get("ApiUrl", "").startswith("https://") for m in members):
                break
            assert time.monotonic() < deadline, members
            time.sleep(0.05)
        group = {"Id": "g", "FailoverTimeout": "00:00:10"}
        assert client.post(cluster.urls[follower] + GROUPS, json=group).status_code in (200, 201)
        sessions = f"{cluster.urls[follower]}{GROUPS}/g/clientsessions"
        assert client.post(sessions, json={"Id": "s"}).status_code in (200, 201)
        beat = client.post(f"{sessions}/s/heartbeat", json={"FailoverScore": 1})
        assert beat.status_code == 200, beat.text
        assert beat.json()["Role"] in (1, "Primary")
        tls_view = client.get(cluster.urls[leader] + "/api/v1/cluster").json()["Tls"]
        assert tls_view["Enabled"] and tls_view["DaysLeft"] > 5000


def _raw_exchange(port: int, data: bytes, wait: float = 8.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it; raises
    TimeoutError if it is still open after ``wait`` seconds."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        if data:
            sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):  # socket timeout -> TimeoutError
            received += chunk
        return received


@pytest.mark.cluster
def test_slow_and_oversized_requests_are_cut_off(tmp_path: Path) -> None:
    """Slowloris guard: a connection whose request is incomplete after the read timeout is
    closed (idle, trickled headers, trickled body); oversized headers get 431 + ErrorResponse.
    The node keeps serving everyone else."""
    with Cluster(tmp_path, size=1, extra_args=["--request-read-timeout", "1"]) as cluster:
        port = cluster.nodes[0].api_port
        assert _raw_exchange(port, b"") == b""  # connected, never sent a byte
        partial_headers = b"GET /healthz HTTP/1.1\r\nHost: cfs\r\nX-Slow: "
        assert _raw_exchange(port, partial_headers) == b""
        partial_body = (
            b"POST /api/v1/clientfailover/groups HTTP/1.1\r\nHost: cfs\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"Id": '
        )
        assert _raw_exchange(port, partial_body) == b""
        huge = b"GET /healthz HTTP/1.1\r\nHost: cfs\r\nX-Big: " + b"a" * 40_000
        for request in (huge + b"\r\n\r\n", huge):  # complete, and never finished
            answer = _raw_exchange(port, request)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 431 "), answer[:200]
            assert {"OperationId", "Error", "Reason", "Resolution"} <= json.loads(body).keys()
        assert cluster.client.get(cluster.urls[0] + GROUPS).json() == []  # nothing created
        assert cluster.client.get(cluster.urls[0] + "/readyz").status_code == 200
