"""OAuth client credentials (issue 5 §2): clients, discovery, the token endpoint, Bearer tokens,
signing-key rotation.

In-process single-node tests drive the real front door and Raft (one member) through httpx's
ASGI transport, with a fake wall clock for expiry; one test runs a real 3-node cluster to show
that tokens verify on every node, rotation keeps old tokens valid, and secrets stay out of logs.
"""

from __future__ import annotations

import base64
import json
import logging
import pickle
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.clusterkit import Cluster
from support.nodes import ADMIN, GROUPS, assert_error, basic, run, settings_for, single_node, until

from cfs_cluster import engine
from cfs_cluster.cluster.node import Node
from cfs_cluster.errors import InvalidToken
from cfs_cluster.security import tokens
from cfs_cluster.settings import SecuritySettings

DISCOVERY = "/identity/.well-known/openid-configuration"
TOKEN = "/identity/connect/token"
CLIENTS = "/api/v1/clients"
ROTATE = "/api/v1/identity/signing-keys/rotate"
FORM = {"content-type": "application/x-www-form-urlencoded"}
SESSIONS = f"{GROUPS}/g/clientsessions"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a JWT, unverified."""
    header, body, _ = token.split(".")
    return json.loads(_unpad(header)), json.loads(_unpad(body))


def _unpad(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def token_for(client: httpx.AsyncClient, client_id: str, secret: str) -> str:
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    response = await client.post(TOKEN, data=form)
    assert response.status_code == 200, response.text
    access_token: str = response.json()["access_token"]
    return access_token


async def add_client(client: httpx.AsyncClient, client_id: str, role: str) -> str:
    body = {"ClientId": client_id, "Role": role}
    response = await client.post(CLIENTS, json=body, headers=basic(*ADMIN))
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    secret: str = response.json()["ClientSecret"]
    return secret


async def _has_users(node: Node) -> bool:
    return bool(node.users())


def admin_settings(tmp_path: Path, **security: Any) -> Any:
    return settings_for(tmp_path, bootstrap_admin=f"{ADMIN[0]}:{ADMIN[1]}", **security)


# --------------------------------------------------------------------------- units


def test_signing_key_rotation_retires_then_drops_old_keys() -> None:
    state = engine.ClusterState()
    first = engine.RotateSigningKey("r1", "k1", "aa", time=100, retain=60, only_if_none=True)
    assert engine.apply(state, first).code == engine.Code.CREATED
    again = engine.RotateSigningKey("r2", "k2", "bb", time=101, retain=60, only_if_none=True)
    assert engine.apply(state, again).code == engine.Code.OK  # a racing node's first key loses
    assert [k.kid for k in state.signing_keys] == ["k1"]
    engine.apply(state, engine.RotateSigningKey("r3", "k3", "cc", time=200, retain=60))
    assert [(k.kid, k.retired_at) for k in state.signing_keys] == [("k1", 200), ("k3", None)]
    engine.apply(state, engine.RotateSigningKey("r4", "k4", "dd", time=259, retain=60))
    assert [k.kid for k in state.signing_keys] == ["k1", "k3", "k4"]  # k1's tokens may live
    engine.apply(state, engine.RotateSigningKey("r5", "k5", "ee", time=261, retain=60))
    assert [k.kid for k in state.signing_keys] == ["k3", "k4", "k5"]  # k1 retired > 60 s ago
    clash = engine.RotateSigningKey("r6", "k5", "ff", time=262, retain=60)
    assert engine.apply(state, clash).code == engine.Code.CONFLICT


def test_client_commands() -> None:
    state = engine.ClusterState()
    assert engine.apply(state, engine.AddClient("a", "c1", "users", "h1")).code == "created"
    assert engine.apply(state, engine.AddClient("b", "c1", "users", "h2")).code == "conflict"
    engine.apply(state, engine.UpdateClient("c", "c1", secret_hash="h3"))
    assert (state.clients["c1"].secret_hash, state.clients["c1"].version) == ("h3", 1)
    engine.apply(state, engine.AddUser("u", "root", "administrators", "hu"))
    engine.apply(state, engine.UpdateClient("d", "c1", role="administrators"))
    assert state.clients["c1"].version == 1  # a role change keeps the tokens
    missing = engine.UpdateClient("e", "nobody", role="users")
    assert engine.apply(state, missing).code == engine.Code.CLIENT_NOT_FOUND
    assert engine.apply(state, engine.RemoveClient("f", "c1")).code == engine.Code.DELETED
    assert engine.apply(state, engine.RemoveClient("g", "c1")).code == "client_not_found"


def test_an_old_snapshot_loads_with_no_clients_and_no_keys() -> None:
    state = engine.ClusterState()
    del state.__dict__["clients"], state.__dict__["signing_keys"]  # as written before issue 5 §2
    loaded = pickle.loads(pickle.dumps(state))
    assert loaded.clients == {} and loaded.signing_keys == []


def _service(now: list[float]) -> tuple[tokens.TokenService, engine.ClusterState]:
    state = engine.ClusterState()
    engine.apply(state, engine.AddClient("a", "plc", "users", "h"))
    engine.apply(state, engine.RotateSigningKey("k", "k1", "11" * 32, time=0, retain=60))
    return tokens.TokenService(lambda: state, 60, clock=lambda: now[0]), state


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"), id="signature"),
        pytest.param(lambda t: t.replace(t.split(".")[1], "e30"), id="claims-swapped"),
        pytest.param(lambda t: "eyJhbGciOiJub25lIn0." + t.split(".")[1] + ".", id="alg-none"),
        pytest.param(lambda t: "a.b", id="two-parts"),
        pytest.param(lambda t: "!!.??.**", id="not-base64"),
        pytest.param(lambda t: "x" * 10_000, id="huge"),
        pytest.param(lambda t: "W10.W10.", id="json-array"),
    ],
)
def test_forged_or_malformed_tokens_are_refused(mangle: Any) -> None:
    service, state = _service([0.0])
    token = service.issue(state.clients["plc"], "http://cfs/identity", state.signing_keys[-1])
    assert service.verify(token).name == "plc"
    with pytest.raises(InvalidToken):
        service.verify(mangle(token))


def test_token_expiry_and_revocation_with_a_fake_clock() -> None:
    now = [1000.0]
    service, state = _service(now)
    token = service.issue(state.clients["plc"], "http://cfs/identity", state.signing_keys[-1])
    _, body = claims(token)
    assert body["exp"] - body["iat"] == 60 and body["sub"] == "plc" and body["role"] == "users"
    for _ in range(3):
        assert service.verify(token) == tokens.Principal("plc", "users")
    assert service.signatures_checked == 1  # cached by string after the first check
    now[0] += 60
    with pytest.raises(InvalidToken, match="expired"):
        service.verify(token)
    now[0] = 1000.0
    token = service.issue(state.clients["plc"], "http://cfs/identity", state.signing_keys[-1])
    engine.apply(state, engine.UpdateClient("u", "plc", role="administrators"))
    assert service.verify(token).role == "administrators"  # the role is read live
    engine.apply(state, engine.UpdateClient("s", "plc", secret_hash="new"))
    with pytest.raises(InvalidToken, match="new secret"):
        service.verify(token)


def test_token_lifetime_setting_is_validated() -> None:
    from cfs_cluster.errors import BadRequest

    with pytest.raises(BadRequest):
        SecuritySettings(token_lifetime=0).validate()
    SecuritySettings(token_lifetime=5).validate()


# --------------------------------------------------------------------------- in-process node


def test_discovery_points_at_this_node(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with single_node(admin_settings(tmp_path)) as (node, client):
            await until(lambda: _has_users(node), "bootstrap admin")
            response = await client.get("/Identity/.well-known/openid-configuration")  # no auth
            assert response.status_code == 200, response.text
            document = response.json()
            assert document["token_endpoint"] == "http://cfs/identity/connect/token"
            assert document["issuer"] == "http://cfs/identity"
            assert document["grant_types_supported"] == ["client_credentials"]
            other = await client.get(DISCOVERY, headers={"host": "node2.plant:5591"})
            assert (
                other.json()["token_endpoint"] == "http://node2.plant:5591/identity/connect/token"
            )
            hostile = await client.get(DISCOVERY, headers={"host": "evil/x?"})
            assert hostile.json()["token_endpoint"].startswith(node.settings.api_url)

    run(scenario())


def test_token_flow_errors_and_bearer_roles(tmp_path: Path, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario() -> tuple[str, ...]:
        async with single_node(admin_settings(tmp_path)) as (node, client):
            await until(lambda: _has_users(node), "bootstrap admin")
            adapter_secret = await add_client(client, "plc-1", "users")
            admin_secret = await add_client(client, "ops", "administrators")
            form = {"grant_type": "client_credentials", "client_id": "plc-1"}

            # Form client authentication, then HTTP Basic (RFC 6749 §2.3.1).
            issued = await client.post(TOKEN, data={**form, "client_secret": adapter_secret})
            assert issued.status_code == 200, issued.text
            body = issued.json()
            assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
            assert issued.headers["cache-control"] == "no-store"
            header, payload = claims(body["access_token"])
            assert header["alg"] == "HS256" and header["kid"]
            assert {"iss", "sub", "role", "iat", "exp"} <= payload.keys()
            via_basic = await client.post(
                TOKEN,
                data={"grant_type": "client_credentials"},
                headers=basic("plc-1", adapter_secret),
            )
            assert via_basic.status_code == 200, via_basic.text

            # RFC 6749 §5.2 errors.
            wrong = await client.post(TOKEN, data={**form, "client_secret": "nope"})
            assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
            unknown = await client.post(
                TOKEN, data={**form, "client_id": "ghost", "client_secret": "nope"}
            )
            assert unknown.json()["error"] == "invalid_client"
            grant = await client.post(
                TOKEN, data={"grant_type": "password", "client_id": "plc-1", "client_secret": "x"}
            )
            assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"
            for bad in (
                await client.post(TOKEN, data={"client_id": "plc-1"}),
                await client.post(TOKEN, json={"grant_type": "client_credentials"}),
                await client.post(TOKEN, content=b"grant_type=a&grant_type=b", headers=FORM),
                await client.post(TOKEN, content=b"\xff\xfe", headers=FORM),
                await client.post(
                    TOKEN,
                    data={**form, "client_secret": adapter_secret},
                    headers=basic("plc-1", adapter_secret),
                ),
            ):
                assert bad.status_code == 400 and bad.json()["error"] == "invalid_request", bad.text

            # Bearer on reads, the heartbeat fast path and admin endpoints, with roles.
            user_token = issued.json()["access_token"]
            admin_token = await token_for(client, "ops", admin_secret)
            group = {"Id": "g", "FailoverTimeout": "00:00:10"}
            assert (await client.post(GROUPS, json=group, headers=bearer(user_token))).is_success
            assert (await client.get(GROUPS, headers=bearer(user_token))).status_code == 200
            made = await client.post(SESSIONS, json={"Id": "s"}, headers=bearer(user_token))
            assert made.is_success
            beat = await client.post(
                f"{SESSIONS}/s/heartbeat", json={"FailoverScore": 1}, headers=bearer(user_token)
            )
            assert beat.status_code == 200, beat.text
            override = {"Value": "Primary", "Period": "00:01:00"}
            assert_error(
                await client.post(
                    f"{SESSIONS}/s/roleoverride", json=override, headers=bearer(user_token)
                ),
                403,
            )
            ok = await client.post(
                f"{SESSIONS}/s/roleoverride", json=override, headers=bearer(admin_token)
            )
            assert ok.status_code == 200, ok.text
            assert_error(await client.get(CLIENTS, headers=bearer(user_token)), 403)
            listed = await client.get(CLIENTS, headers=bearer(admin_token))
            assert listed.json() == [
                {"ClientId": "ops", "Role": "administrators"},
                {"ClientId": "plc-1", "Role": "users"},
            ]
            refused = await client.get(GROUPS, headers=bearer("not.a.token"))
            assert_error(refused, 401)
            assert 'error="invalid_token"' in refused.headers["www-authenticate"]

            # A new secret revokes the old tokens and the old secret; removal revokes all.
            rotated = await client.post(f"{CLIENTS}/plc-1/secret", headers=basic(*ADMIN))
            assert rotated.status_code == 200, rotated.text
            new_secret = rotated.json()["ClientSecret"]
            assert new_secret != adapter_secret
            assert_error(await client.get(GROUPS, headers=bearer(user_token)), 401)
            old = await client.post(TOKEN, data={**form, "client_secret": adapter_secret})
            assert old.status_code == 401
            fresh = await token_for(client, "plc-1", new_secret)
            assert (await client.get(GROUPS, headers=bearer(fresh))).status_code == 200
            gone = await client.delete(f"{CLIENTS}/plc-1", headers=bearer(admin_token))
            assert gone.status_code == 204
            assert_error(await client.get(GROUPS, headers=bearer(fresh)), 401)
            assert (
                await client.post(TOKEN, data={**form, "client_secret": new_secret})
            ).status_code == 401

            # Management errors are clear 4xx.
            assert_error(
                await client.post(CLIENTS, json={"ClientId": "a:b"}, headers=basic(*ADMIN)), 400
            )
            assert_error(
                await client.post(CLIENTS, json={"ClientSecret": "short"}, headers=basic(*ADMIN)),
                400,
            )
            assert_error(
                await client.post(CLIENTS, json={"ClientId": "ops"}, headers=basic(*ADMIN)), 409
            )
            assert_error(
                await client.put(f"{CLIENTS}/ghost", json={"Role": "users"}, headers=basic(*ADMIN)),
                404,
            )
            assert_error(await client.put(f"{CLIENTS}/ops", json={}, headers=basic(*ADMIN)), 400)
            supplied = await client.post(
                CLIENTS,
                json={"ClientSecret": "a-supplied-secret-123"},
                headers=basic(*ADMIN),
            )
            assert supplied.status_code == 201 and supplied.json()["ClientSecret"] == (
                "a-supplied-secret-123"
            )
            return adapter_secret, new_secret, user_token, admin_token

    secrets = run_returning(scenario())
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Issued an access token to client 'plc-1'" in logged
    for secret in secrets:
        assert secret not in logged


def run_returning(coro: Any) -> Any:
    import asyncio

    return asyncio.run(coro)


def test_expired_token_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with single_node(admin_settings(tmp_path)) as (node, client):
            await until(lambda: _has_users(node), "bootstrap admin")
            secret = await add_client(client, "plc", "users")
            now = [time.time()]
            assert node.auth.tokens is not None
            node.auth.tokens = tokens.TokenService(
                lambda: node.replicator.state, 5, clock=lambda: now[0]
            )  # a 5 s lifetime on a fake wall clock: no sleeping
            token = await token_for(client, "plc", secret)
            assert (await client.get(GROUPS, headers=bearer(token))).status_code == 200
            now[0] += 5
            refused = await client.get(GROUPS, headers=bearer(token))
            assert "expired" in assert_error(refused, 401)["Reason"]

    run(scenario())


def test_key_rotation_keeps_old_tokens_until_they_expire(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with single_node(admin_settings(tmp_path)) as (node, client):
            await until(lambda: _has_users(node), "bootstrap admin")
            secret = await add_client(client, "plc", "users")
            old = await token_for(client, "plc", secret)
            rotated = await client.post(ROTATE, headers=basic(*ADMIN))
            assert rotated.status_code == 200, rotated.text
            keys = rotated.json()
            assert [k["Current"] for k in keys] == [False, True]
            assert "Secret" not in str(keys)
            new = await token_for(client, "plc", secret)
            assert claims(new)[0]["kid"] == keys[-1]["Kid"] != claims(old)[0]["kid"]
            for token in (old, new):
                assert (await client.get(GROUPS, headers=bearer(token))).status_code == 200

    run(scenario())


# --------------------------------------------------------------------------- real cluster


@pytest.mark.cluster
def test_client_credentials_across_a_three_node_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cfs_cluster.cli.main import main

    env = {"CFS_BOOTSTRAP_ADMIN": f"{ADMIN[0]}:{ADMIN[1]}"}
    with Cluster(tmp_path, size=3, env=env) as cluster:
        http, urls = cluster.client, cluster.urls
        creds = ["--url", urls[1], "--user", ADMIN[0], "--password", ADMIN[1]]
        deadline = time.monotonic() + 20
        while main(["clients", *creds, "list"]) != 0:  # until the bootstrap admin is applied
            assert time.monotonic() < deadline, "bootstrap admin never applied"
            time.sleep(0.1)
        capsys.readouterr()
        assert main(["clients", *creds, "add", "plc-9", "--role", "users"]) == 0
        secret = capsys.readouterr().out.split("ClientSecret: ")[1].strip()

        # An adapter's flow: discovery on one node, a token from the endpoint it names.
        document = http.get(urls[0] + DISCOVERY).json()
        assert document["token_endpoint"] == urls[0] + TOKEN
        form = {"grant_type": "client_credentials", "client_id": "plc-9", "client_secret": secret}
        while (issued := http.post(document["token_endpoint"], data=form)).status_code != 200:
            assert time.monotonic() < deadline + 20, issued.text  # client replicating to n1
            time.sleep(0.05)
        old = issued.json()["access_token"]
        group = {"Id": "g", "FailoverTimeout": "00:00:10"}
        assert http.post(urls[2] + GROUPS, json=group, headers=bearer(old)).is_success
        assert http.post(urls[0] + SESSIONS, json={"Id": "s"}, headers=bearer(old)).is_success

        # Rotate the signing key via the CLI: the old token stays valid everywhere, new ones
        # carry the new kid, and every node verifies both.
        assert main(["identity", *creds, "rotate-key"]) == 0
        capsys.readouterr()
        assert main(["identity", *creds, "keys"]) == 0
        keys = capsys.readouterr().out.splitlines()
        assert len(keys) == 2 and keys[-1].endswith("current")
        new_kid = keys[-1].split("\t")[0]
        new = http.post(urls[1] + TOKEN, data=form).json()["access_token"]
        assert claims(new)[0]["kid"] == new_kid != claims(old)[0]["kid"]
        for url in urls:
            for token in (old, new):
                beat = http.post(
                    f"{url}{SESSIONS}/s/heartbeat", json={"FailoverScore": 1}, headers=bearer(token)
                )
                while beat.status_code == 401:  # the rotation is still replicating to this node
                    assert time.monotonic() < deadline + 40, beat.text
                    time.sleep(0.05)
                    beat = http.post(
                        f"{url}{SESSIONS}/s/heartbeat",
                        json={"FailoverScore": 1},
                        headers=bearer(token),
                    )
                assert beat.status_code == 200, beat.text

        # Secret rotation and removal through the CLI revoke the tokens on every node.
        assert main(["clients", *creds, "rotate-secret", "plc-9"]) == 0
        rotated_secret = capsys.readouterr().out.split("ClientSecret: ")[1].strip()
        assert main(["clients", *creds, "remove", "plc-9"]) == 0
        for url in urls:
            while http.get(url + GROUPS, headers=bearer(new)).status_code != 401:
                assert time.monotonic() < deadline + 60, f"removal never reached {url}"
                time.sleep(0.05)
    logs = "\n".join(n.log_path.read_text(errors="replace") for n in cluster.nodes)
    for secret_text in (secret, rotated_secret, old, new, ADMIN[1]):
        assert secret_text not in logs


def test_token_endpoint_refuses_non_ascii_basic_credentials(tmp_path: Path) -> None:
    """Regression: a Basic header with non-ASCII characters (latin-1 on the wire) made
    base64 raise a plain ValueError, answered 500."""

    async def scenario() -> None:
        async with single_node(admin_settings(tmp_path)) as (node, client):
            await until(lambda: _has_users(node), "bootstrap admin")
            for value in ("Basic \u00e9\u00e9", "Basic", "Basic Zm9v", "Basic OnNlY3JldA=="):
                response = await client.post(
                    TOKEN,
                    content=b"grant_type=client_credentials",
                    headers={
                        b"content-type": b"application/x-www-form-urlencoded",
                        b"authorization": value.encode("latin-1"),
                    },
                )
                assert response.status_code == 401, (value, response.text)
                assert response.json()["error"] == "invalid_client"

    run(scenario())


def test_refused_tokens_do_not_earn_a_backoff(tmp_path: Path) -> None:
    async def scenario() -> None:
        settings = admin_settings(tmp_path, failures_before_backoff=2)
        async with single_node(settings) as (node, client):
            await until(lambda: _has_users(node), "bootstrap admin")
            for _ in range(5):
                assert_error(await client.get(GROUPS, headers=bearer("a.b.c")), 401)
            assert (await client.get(GROUPS, headers=basic(*ADMIN))).status_code == 200

    run(scenario())
