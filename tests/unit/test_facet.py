"""The adapter-side ClientFailover facet and FailoverState (seed 002; spec §5.1-§5.3).

Unit level and fast: the standalone app runs in-process behind ``httpx.ASGITransport`` (which
re-raises any server exception, so a handler that would answer 500 fails the test), its
lifespan run by ``AppClient`` below, with a fake runtime in place of the failover agent. tests/cluster/test_facet_cluster.py drives
the real agent against a real 3-node cluster.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from cfs_cluster.errors import BadRequest, CfsError
from cfs_cluster.facet import ClientFailoverConfig, ClientFailoverFacet, create_router
from cfs_cluster.facet.app import canonical_path, create_app
from cfs_cluster.facet.failoverstate import (
    FailoverState,
    Restored,
    format_score,
    format_seed_time,
    format_time,
)
from cfs_cluster.facet.model import MASK, format_timeout, parse_config
from cfs_cluster.facet.plan import Action, plan
from cfs_cluster.facet.runtime import AgentRuntime
from cfs_cluster.facet.store import CONFIG_FILE, ConfigStore
from cfs_cluster.protocol.wire import ClientRole

CONFIG = "/api/v1/configuration/System/ClientFailover"
STATE = "/api/v1/diagnostics/FailoverState"
ERROR_KEYS = {"OperationId", "Error", "Reason", "Resolution"}

# The seed's "Example client failover configuration", byte for byte.
SEED_EXAMPLE = """[
  {
    "Id": "FailoverConfiguration1",
    "FailoverGroupId": "FailoverGroup1",
    "Name": "NameExample",
    "Description": "DescriptionExample",
    "FailoverTimeout": "00:01:00",
    "Mode": "hot",
    "Endpoint": "http://test-endpoint.com",
    "UserName": "UserName1",
    "Password": "Password1",
    "TokenEndpoint": "http://token.com",
    "ValidateEndpointCertificate": false
  }
]"""
MINIMAL = {"FailoverGroupId": "Line1", "Endpoint": "https://cfs.example.test/api/v1/clientfailover"}


class AppClient:
    """A synchronous client over ``httpx.ASGITransport`` that also runs the app's lifespan.

    (Starlette's own AppClient now warns that it wants ``httpx2``, and warnings are errors.)
    """

    def __init__(self, app: FastAPI) -> None:
        self._runner = asyncio.Runner()
        self._lifespan = app.router.lifespan_context(app)
        transport = httpx.ASGITransport(app=app)
        self._client = httpx.AsyncClient(transport=transport, base_url="http://adapter:5590")

    def __enter__(self) -> AppClient:
        self._runner.run(self._lifespan.__aenter__())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._runner.run(self._lifespan.__aexit__(None, None, None))
            self._runner.run(self._client.aclose())
        finally:
            self._runner.close()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self._runner.run(self._client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)


class FakeRuntime:
    """Records every configuration applied; reports whatever state the test sets."""

    def __init__(self) -> None:
        self.applied: list[ClientFailoverConfig | None] = []
        self.current: ClientFailoverConfig | None = None
        self.fixed_state = FailoverState()
        self.closed = False
        self.refuse = False

    async def apply(self, config: ClientFailoverConfig | None) -> str:
        if self.refuse:
            raise BadRequest("refused by the runtime")
        action = plan(self.current, config)
        self.applied.append(config)
        self.current = config
        return str(action)

    def state(self) -> FailoverState:
        return self.fixed_state

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def client(tmp_path: Path, runtime: FakeRuntime) -> Iterator[AppClient]:
    with AppClient(create_app(tmp_path, runtime=runtime)) as test_client:
        yield test_client


def _error(response: Any, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body.keys() >= ERROR_KEYS, body
    return body


def _with(**changes: Any) -> dict[str, Any]:
    body = dict(MINIMAL)
    for key, value in changes.items():
        if value is _ABSENT:
            body.pop(key, None)
        else:
            body[key] = value
    return body


_ABSENT = object()


# --------------------------------------------------------------------------- the seed, verbatim


class TestSeedExample:
    """The seed's example configuration and REST URLs work exactly as published."""

    def test_put_with_the_seeds_curl_command(self, client: AppClient) -> None:
        """`curl -d @ConfigureClientFailover.json -H "Content-Type: application/json" -X PUT`."""
        response = client.put(
            CONFIG, content=SEED_EXAMPLE, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 200, response.text
        [stored] = response.json()
        assert stored == {
            "Id": "FailoverConfiguration1",
            "FailoverGroupId": "FailoverGroup1",
            "Name": "NameExample",
            "Description": "DescriptionExample",
            "FailoverTimeout": "00:01:00",
            "Mode": "Hot",
            "Endpoint": "http://test-endpoint.com",
            "UserName": "UserName1",
            "Password": MASK,
            "ClientId": None,
            "ClientSecret": None,
            "TokenEndpoint": "http://token.com",
            "ValidateEndpointCertificate": False,
        }
        assert client.get(CONFIG).json() == [stored]

    def test_every_rest_url_of_the_seed(self, client: AppClient, runtime: FakeRuntime) -> None:
        """The nine rows of the seed's REST URL table, in a natural order."""
        item = f"{CONFIG}/FailoverConfiguration1"
        assert client.get(CONFIG).json() == []
        assert client.post(CONFIG, content=SEED_EXAMPLE).status_code == 201
        assert client.post(CONFIG, content=SEED_EXAMPLE).status_code == 409
        assert client.get(item).json()["Id"] == "FailoverConfiguration1"
        body = json.loads(SEED_EXAMPLE)[0]
        assert client.put(item, json={**body, "Mode": "Warm"}).json()["Mode"] == "Warm"
        patched = client.patch(item, json={"FailoverTimeout": "00:02:00"})
        assert patched.status_code == 200
        assert patched.json()["FailoverTimeout"] == "00:02:00"
        assert patched.json()["Mode"] == "Warm"
        assert client.put(CONFIG, content=SEED_EXAMPLE).status_code == 200
        assert client.delete(item).status_code == 204
        assert client.get(item).status_code == 404
        assert client.post(CONFIG, content=SEED_EXAMPLE).status_code == 201
        assert client.delete(CONFIG).status_code == 204
        assert client.get(CONFIG).json() == []
        assert runtime.current is None
        state = client.get(STATE)
        assert state.status_code == 200
        assert list(state.json())[:4] == [
            "Role",
            "LastDataProcessedTime",
            "FailoverStatus",
            "AdapterState",
        ]

    @pytest.mark.parametrize(
        ("sent", "stored", "behaves_as"),
        [
            ("Warn", "Warn", "Warm"),
            ("warn", "Warn", "Warm"),
            ("NOTCONFIGURED", "NotConfigured", "None"),
        ],
    )
    def test_the_seeds_and_frameworks_spellings_are_answered_as_stored(
        self, client: AppClient, runtime: FakeRuntime, sent: str, stored: str, behaves_as: str
    ) -> None:
        """The seed's table says ``Warn``; the adapter framework says ``NotConfigured``."""
        response = client.post(CONFIG, json=_with(Mode=sent))
        assert response.json()["Mode"] == stored
        assert client.get(CONFIG).json()[0]["Mode"] == stored
        assert runtime.current is not None and runtime.current.behaviour == behaves_as
        assert runtime.current.enabled is (behaves_as != "None")


# --------------------------------------------------------------------------- validation table

VALID = [
    pytest.param({"Id": "FailoverConfiguration1"}, id="Id-given"),
    pytest.param({"Id": None}, id="Id-null-generated"),
    pytest.param({"Name": "Line 1"}, id="Name"),
    pytest.param({"Name": None, "Description": None}, id="Name-Description-null"),
    pytest.param({"Description": "Packaging line"}, id="Description"),
    pytest.param({"FailoverTimeout": "00:00:15"}, id="FailoverTimeout-minimum"),
    pytest.param({"FailoverTimeout": "23:59:59"}, id="FailoverTimeout-maximum"),
    pytest.param({"FailoverTimeout": 90}, id="FailoverTimeout-seconds"),
    pytest.param({"FailoverTimeout": "120"}, id="FailoverTimeout-seconds-string"),
    pytest.param({"FailoverTimeout": 15.5}, id="FailoverTimeout-fraction"),
    pytest.param({"FailoverTimeout": None}, id="FailoverTimeout-null-default"),
    pytest.param({"Mode": "Hot"}, id="Mode-Hot"),
    pytest.param({"Mode": "hot"}, id="Mode-hot"),
    pytest.param({"Mode": "WARM"}, id="Mode-WARM"),
    pytest.param({"Mode": "Cold"}, id="Mode-Cold"),
    pytest.param({"Mode": "None"}, id="Mode-None"),
    pytest.param({"Endpoint": "http://test-endpoint.com"}, id="Endpoint-http"),
    pytest.param({"Endpoint": "https://10.0.0.5:5590/api/v1/clientfailover"}, id="Endpoint-https"),
    pytest.param({"UserName": "OilCompany\\TestUser", "Password": "pw"}, id="Basic"),
    pytest.param({"ClientId": "cid", "ClientSecret": "secret"}, id="ClientCredentials"),
    pytest.param(
        {"ClientId": "cid", "ClientSecret": "s", "TokenEndpoint": "https://login.test/token"},
        id="TokenEndpoint",
    ),
    pytest.param({"UserName": "", "Password": ""}, id="empty-credentials-are-none"),
    pytest.param({"ValidateEndpointCertificate": False}, id="ValidateEndpointCertificate-false"),
    pytest.param({"ValidateEndpointCertificate": None}, id="ValidateEndpointCertificate-null"),
]

INVALID = [
    pytest.param({"Id": 5}, "Id", id="Id-number"),
    pytest.param({"Id": "a/b"}, "Id", id="Id-slash"),
    pytest.param({"Id": "x" * 300}, "Id", id="Id-too-long"),
    pytest.param({"Id": "   "}, "Id", id="Id-blank"),
    pytest.param({"FailoverGroupId": _ABSENT}, "FailoverGroupId", id="FailoverGroupId-missing"),
    pytest.param({"FailoverGroupId": ""}, "FailoverGroupId", id="FailoverGroupId-empty"),
    pytest.param({"FailoverGroupId": None}, "FailoverGroupId", id="FailoverGroupId-null"),
    pytest.param({"FailoverGroupId": 7}, "FailoverGroupId", id="FailoverGroupId-number"),
    pytest.param({"FailoverGroupId": "g\n1"}, "FailoverGroupId", id="FailoverGroupId-control"),
    pytest.param({"Name": ""}, "Name", id="Name-empty"),
    pytest.param({"Name": 3}, "Name", id="Name-number"),
    pytest.param({"Description": ""}, "Description", id="Description-empty"),
    pytest.param({"Description": ["a"]}, "Description", id="Description-array"),
    pytest.param({"FailoverTimeout": "00:00:14"}, "FailoverTimeout", id="FailoverTimeout-short"),
    pytest.param({"FailoverTimeout": 14}, "FailoverTimeout", id="FailoverTimeout-short-seconds"),
    pytest.param({"FailoverTimeout": -30}, "FailoverTimeout", id="FailoverTimeout-negative"),
    pytest.param({"FailoverTimeout": "abc"}, "FailoverTimeout", id="FailoverTimeout-text"),
    pytest.param({"FailoverTimeout": "25:00:00"}, "FailoverTimeout", id="FailoverTimeout-hours"),
    pytest.param({"FailoverTimeout": "00:60:00"}, "FailoverTimeout", id="FailoverTimeout-minutes"),
    pytest.param({"FailoverTimeout": "1.00:00:00"}, "FailoverTimeout", id="FailoverTimeout-day"),
    pytest.param({"FailoverTimeout": "1.2.3"}, "FailoverTimeout", id="FailoverTimeout-dots"),
    pytest.param({"FailoverTimeout": True}, "FailoverTimeout", id="FailoverTimeout-bool"),
    pytest.param({"FailoverTimeout": 10**30}, "FailoverTimeout", id="FailoverTimeout-huge"),
    pytest.param({"FailoverTimeout": {"h": 1}}, "FailoverTimeout", id="FailoverTimeout-object"),
    pytest.param({"Mode": "Lukewarm"}, "Mode", id="Mode-unknown"),
    pytest.param({"Mode": 1}, "Mode", id="Mode-number"),
    pytest.param({"Mode": ""}, "Mode", id="Mode-empty"),
    pytest.param({"Endpoint": _ABSENT}, "Endpoint", id="Endpoint-missing"),
    pytest.param({"Endpoint": None}, "Endpoint", id="Endpoint-null"),
    pytest.param({"Endpoint": "ftp://cfs/api"}, "Endpoint", id="Endpoint-ftp"),
    pytest.param({"Endpoint": "cfs-host:5590"}, "Endpoint", id="Endpoint-relative"),
    pytest.param({"Endpoint": "http://"}, "Endpoint", id="Endpoint-no-host"),
    pytest.param({"Endpoint": "http://cfs:99999/"}, "Endpoint", id="Endpoint-bad-port"),
    pytest.param({"Endpoint": "http://u:p@cfs/"}, "Endpoint", id="Endpoint-credentials"),
    pytest.param({"Endpoint": "http://cfs/a b"}, "Endpoint", id="Endpoint-space"),
    pytest.param({"Endpoint": 42}, "Endpoint", id="Endpoint-number"),
    pytest.param({"UserName": "u"}, "Password", id="UserName-without-Password"),
    pytest.param({"Password": "p"}, "UserName", id="Password-without-UserName"),
    pytest.param({"UserName": 1, "Password": "p"}, "UserName", id="UserName-number"),
    pytest.param({"ClientId": "c"}, "ClientSecret", id="ClientId-without-ClientSecret"),
    pytest.param({"ClientSecret": "s"}, "ClientId", id="ClientSecret-without-ClientId"),
    pytest.param(
        {"UserName": "u", "Password": "p", "ClientId": "c", "ClientSecret": "s"},
        "ClientId",
        id="two-credential-pairs",
    ),
    pytest.param({"TokenEndpoint": "token.com"}, "TokenEndpoint", id="TokenEndpoint-relative"),
    pytest.param({"TokenEndpoint": 1}, "TokenEndpoint", id="TokenEndpoint-number"),
    pytest.param(
        {"ValidateEndpointCertificate": "false"},
        "ValidateEndpointCertificate",
        id="ValidateEndpointCertificate-string",
    ),
    pytest.param(
        {"ValidateEndpointCertificate": 0},
        "ValidateEndpointCertificate",
        id="ValidateEndpointCertificate-number",
    ),
    pytest.param({"FailoverTimout": "00:01:00"}, "FailoverTimout", id="unknown-misspelt"),
    pytest.param({"DebugExpiration": None}, "DebugExpiration", id="unknown-hidden-field"),
    pytest.param({"Endpoint ": "http://x"}, "Endpoint ", id="unknown-trailing-space"),
]


class TestValidation:
    """Every row of the parameter table: valid values stored, invalid ones a 400 naming the field."""

    @pytest.mark.parametrize("changes", VALID)
    def test_valid_values_are_accepted(self, client: AppClient, changes: dict[str, Any]) -> None:
        response = client.post(CONFIG, json=_with(**changes))
        assert response.status_code == 201, response.text
        stored = response.json()
        for key, value in changes.items():
            if key in ("Password", "ClientSecret") and value:
                assert stored[key] == MASK
            elif key == "Mode":
                assert stored[key] == value.capitalize()
            elif key not in ("Id", "FailoverTimeout") and value != "":
                assert stored[key] == (True if value is None and key[0] == "V" else value)
        assert stored["Id"]  # generated when not given

    @pytest.mark.parametrize(("changes", "field"), INVALID)
    def test_invalid_values_are_a_400_naming_the_field(
        self, client: AppClient, runtime: FakeRuntime, changes: dict[str, Any], field: str
    ) -> None:
        for method in ("POST", "PUT"):
            body = _error(client.request(method, CONFIG, json=_with(**changes)))
            assert field in body["Reason"], body
        assert runtime.applied == [] or runtime.applied == [None]
        assert client.get(CONFIG).json() == []

    @pytest.mark.parametrize(
        ("value", "expected"),
        [("00:01:00", "00:01:00"), (15, "00:00:15"), ("90", "00:01:30"), (None, "00:01:00"),
         ("1:2:3", "01:02:03"), (15.25, "00:00:15.2500000")],
    )  # fmt: skip
    def test_failover_timeout_is_normalised(
        self, client: AppClient, value: Any, expected: str
    ) -> None:
        assert client.put(CONFIG, json=_with(FailoverTimeout=value)).json()["FailoverTimeout"] == (
            expected
        )

    def test_failover_timeout_defaults_to_one_minute_and_mode_to_none(
        self, client: AppClient, runtime: FakeRuntime
    ) -> None:
        """The seed's defaults: a configuration without Mode is no failover."""
        stored = client.post(CONFIG, json=MINIMAL).json()
        assert (stored["FailoverTimeout"], stored["Mode"]) == ("00:01:00", "None")
        assert stored["ValidateEndpointCertificate"] is True
        assert runtime.current is not None and not runtime.current.enabled

    def test_property_names_in_any_casing(self, client: AppClient) -> None:
        body = {
            "failoverGroupId": "g",
            "ENDPOINT": "http://cfs",
            "mode": "cold",
            "failovertimeout": "00:00:30",
        }
        stored = client.post(CONFIG, json=body).json()
        assert (stored["FailoverGroupId"], stored["Mode"], stored["FailoverTimeout"]) == (
            "g",
            "Cold",
            "00:00:30",
        )

    def test_a_property_twice_in_two_casings_is_refused(self, client: AppClient) -> None:
        body = _error(client.post(CONFIG, json={**MINIMAL, "endpoint": "http://other"}))
        assert "Endpoint" in body["Reason"]

    def test_pure_parser_names_the_field(self) -> None:
        with pytest.raises(BadRequest, match="FailoverTimeout"):
            parse_config(_with(FailoverTimeout="00:00:01"))
        assert parse_config(MINIMAL).failover_timeout == 60.0

    def test_secrets_never_appear_in_repr(self) -> None:
        config = parse_config(_with(UserName="u", Password="hunter2"))
        assert "hunter2" not in repr(config)
        config = parse_config(_with(ClientId="c", ClientSecret="s3cr3t"))
        assert "s3cr3t" not in repr(config)


# --------------------------------------------------------------------------- verbs and codes


class TestVerbs:
    """The REST verbs, their status codes and the one-configuration rule."""

    def test_get_is_always_a_list(self, client: AppClient) -> None:
        assert client.get(CONFIG).json() == []
        client.post(CONFIG, json=MINIMAL)
        assert len(client.get(CONFIG).json()) == 1

    def test_post_answers_in_the_shape_it_was_given(self, client: AppClient) -> None:
        assert isinstance(client.post(CONFIG, json=MINIMAL).json(), dict)
        client.delete(CONFIG)
        assert isinstance(client.post(CONFIG, json=[MINIMAL]).json(), list)

    def test_post_fails_409_when_one_exists(self, client: AppClient) -> None:
        client.post(CONFIG, json=_with(Id="first"))
        body = _error(client.post(CONFIG, json=_with(Id="second")), 409)
        assert "first" in body["Reason"]
        assert client.get(CONFIG).json()[0]["Id"] == "first"

    @pytest.mark.parametrize("method", ["POST", "PUT"])
    def test_a_second_entry_is_rejected(self, client: AppClient, method: str) -> None:
        body = _error(client.request(method, CONFIG, json=[MINIMAL, _with(Id="two")]))
        assert "one" in body["Reason"]
        assert client.get(CONFIG).json() == []

    @pytest.mark.parametrize("method", ["POST", "PUT"])
    def test_an_empty_array_is_rejected(self, client: AppClient, method: str) -> None:
        _error(client.request(method, CONFIG, json=[]))

    def test_put_creates_then_replaces_keeping_the_id(self, client: AppClient) -> None:
        first = client.put(CONFIG, json=MINIMAL).json()
        second = client.put(CONFIG, json=_with(Mode="Cold")).json()
        assert second["Id"] == first["Id"] and second["Mode"] == "Cold"
        third = client.put(CONFIG, json=_with(Id="renamed")).json()
        assert third["Id"] == "renamed"
        assert [c["Id"] for c in client.get(CONFIG).json()] == ["renamed"]

    def test_get_by_id_any_casing_and_404(self, client: AppClient) -> None:
        client.post(CONFIG, json=_with(Id="Cfg1"))
        assert client.get(f"{CONFIG}/cfg1").json()["Id"] == "Cfg1"
        body = _error(client.get(f"{CONFIG}/other"), 404)
        assert "other" in body["Reason"]

    def test_put_by_id_fails_when_absent(self, client: AppClient) -> None:
        _error(client.put(f"{CONFIG}/nope", json=MINIMAL), 404)
        assert client.get(CONFIG).json() == []

    def test_put_by_id_replaces_and_checks_the_body_id(self, client: AppClient) -> None:
        client.post(CONFIG, json=_with(Id="cfg"))
        replaced = client.put(f"{CONFIG}/cfg", json=_with(Mode="Warm"))
        assert replaced.status_code == 200 and replaced.json()["Id"] == "cfg"
        body = _error(client.put(f"{CONFIG}/cfg", json=_with(Id="different")))
        assert "Id" in body["Reason"]

    def test_patch_merges(self, client: AppClient, runtime: FakeRuntime) -> None:
        client.post(CONFIG, json=_with(Id="cfg", Name="Line 1", UserName="u", Password="p"))
        patched = client.patch(f"{CONFIG}/cfg", json={"failoverTimeout": "00:00:20"}).json()
        assert patched["FailoverTimeout"] == "00:00:20"
        assert (patched["Name"], patched["UserName"], patched["Password"]) == ("Line 1", "u", MASK)
        assert runtime.current is not None and runtime.current.password == "p"

    def test_patch_null_resets_and_can_switch_credentials(
        self, client: AppClient, runtime: FakeRuntime
    ) -> None:
        client.post(CONFIG, json=_with(Id="cfg", Name="n", UserName="u", Password="p"))
        switch = {
            "Name": None,
            "UserName": None,
            "Password": None,
            "ClientId": "cid",
            "ClientSecret": "cs",
        }
        patched = client.patch(f"{CONFIG}/cfg", json=switch).json()
        assert (patched["Name"], patched["UserName"], patched["ClientId"]) == (None, None, "cid")
        assert runtime.current is not None and runtime.current.client_secret == "cs"

    def test_patch_that_breaks_a_rule_changes_nothing(self, client: AppClient) -> None:
        client.post(CONFIG, json=_with(Id="cfg", UserName="u", Password="p"))
        body = _error(client.patch(f"{CONFIG}/cfg", json={"ClientId": "c", "ClientSecret": "s"}))
        assert "ClientId" in body["Reason"]
        _error(client.patch(f"{CONFIG}/cfg", json={"FailoverTimeout": "00:00:01"}))
        _error(client.patch(f"{CONFIG}/cfg", json={"Bogus": 1}))
        _error(client.patch(f"{CONFIG}/cfg", json={"Id": "renamed"}))
        _error(client.patch(f"{CONFIG}/cfg", json=[{"Mode": "Cold"}]))
        assert client.get(f"{CONFIG}/cfg").json()["FailoverTimeout"] == "00:01:00"

    def test_patch_on_the_collection_changes_the_one_there_is(self, client: AppClient) -> None:
        _error(client.patch(CONFIG, json={"Mode": "Cold"}), 404)
        client.post(CONFIG, json=MINIMAL)
        assert client.patch(CONFIG, json={"Mode": "Cold"}).json()["Mode"] == "Cold"

    def test_patch_by_id_fails_when_absent(self, client: AppClient) -> None:
        _error(client.patch(f"{CONFIG}/nope", json={"Mode": "Cold"}), 404)

    def test_delete_by_id_and_collection(self, client: AppClient, runtime: FakeRuntime) -> None:
        client.post(CONFIG, json=_with(Id="cfg"))
        _error(client.delete(f"{CONFIG}/other"), 404)
        assert client.delete(f"{CONFIG}/CFG").status_code == 204
        _error(client.delete(f"{CONFIG}/cfg"), 404)
        assert client.delete(CONFIG).status_code == 204  # idempotent
        assert runtime.current is None

    def test_a_refused_configuration_changes_nothing(
        self, client: AppClient, runtime: FakeRuntime
    ) -> None:
        runtime.refuse = True
        _error(client.post(CONFIG, json=MINIMAL))
        assert client.get(CONFIG).json() == []

    def test_other_methods_are_405(self, client: AppClient) -> None:
        _error(client.post(f"{CONFIG}/cfg", json=MINIMAL), 405)
        _error(client.delete(STATE), 405)

    def test_paths_in_any_casing_and_with_a_trailing_slash(self, client: AppClient) -> None:
        assert client.post(CONFIG.lower() + "/", json=_with(Id="cfg")).status_code == 201
        assert client.get(CONFIG.upper() + "/cfg/").json()["Id"] == "cfg"
        assert client.get(STATE.lower()).status_code == 200

    def test_canonical_path_leaves_other_paths_alone(self) -> None:
        prefixes = (CONFIG,)
        assert canonical_path("/docs", prefixes) == "/docs"
        assert canonical_path(CONFIG + "x", prefixes) == CONFIG + "x"
        assert canonical_path(CONFIG.lower() + "/Id/", prefixes) == CONFIG + "/Id"


# --------------------------------------------------------------------------- masking


class TestMasking:
    """Password and ClientSecret never leave unmasked; the mask sent back keeps the secret."""

    def test_get_masks_both_secrets(self, client: AppClient) -> None:
        client.post(CONFIG, json=_with(Id="a", ClientId="c", ClientSecret="very-secret"))
        for response in (client.get(CONFIG), client.get(f"{CONFIG}/a")):
            assert "very-secret" not in response.text
            assert MASK in response.text

    def test_round_trip_of_a_get_keeps_the_secret(
        self, client: AppClient, runtime: FakeRuntime
    ) -> None:
        client.post(CONFIG, json=_with(UserName="u", Password="pw"))
        [document] = client.get(CONFIG).json()
        assert client.put(CONFIG, json={**document, "Mode": "Cold"}).status_code == 200
        assert runtime.current is not None
        assert (runtime.current.password, runtime.current.mode) == ("pw", "Cold")

    def test_the_mask_is_not_a_new_secret(self, client: AppClient) -> None:
        body = _error(client.post(CONFIG, json=_with(UserName="u", Password=MASK)))
        assert "Password" in body["Reason"]
        client.post(CONFIG, json=_with(UserName="u", Password="pw"))
        body = _error(client.put(CONFIG, json=_with(UserName="other", Password=MASK)))
        assert "Password" in body["Reason"]


# --------------------------------------------------------------------------- garbage in


GARBAGE = [
    pytest.param(b"", id="empty"),
    pytest.param(b"not json", id="not-json"),
    pytest.param(b"{", id="truncated"),
    pytest.param(b"\xff\xfe\x00garbage", id="not-utf8"),
    pytest.param(b"null", id="null"),
    pytest.param(b"42", id="number"),
    pytest.param(b'"text"', id="string"),
    pytest.param(b"true", id="bool"),
    pytest.param(b"[1]", id="array-of-number"),
    pytest.param(b"[[]]", id="array-of-array"),
    pytest.param(b"[null]", id="array-of-null"),
    pytest.param(b"[" * 5000 + b"]" * 5000, id="deep-nesting"),
    pytest.param(b'{"a":' * 100 + b"1" + b"}" * 100, id="deep-object"),
    pytest.param(b'{"FailoverTimeout": ' + b"9" * 5000 + b"}", id="huge-number"),
    pytest.param(json.dumps({**MINIMAL, "Name": "n" * 5000}).encode(), id="long-string"),
    pytest.param(json.dumps({**MINIMAL, "Name": "n" * 200_000}).encode(), id="huge-body"),
    pytest.param(json.dumps({**MINIMAL, "Mode": {"$gt": ""}}).encode(), id="object-value"),
    pytest.param(json.dumps({**MINIMAL, "Id": ["a"]}).encode(), id="array-id"),
    pytest.param(b'{"NaN": NaN}', id="nan-key"),
    pytest.param(json.dumps({**MINIMAL, "FailoverTimeout": float("nan")}).encode(), id="nan"),
]


class TestGarbage:
    """No body, on any verb, gets anything but a 4xx ErrorResponse."""

    @pytest.mark.parametrize("raw", GARBAGE)
    @pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
    def test_garbage_is_a_4xx_error_response(
        self, client: AppClient, method: str, raw: bytes
    ) -> None:
        client.put(CONFIG, json=_with(Id="cfg"))  # so PUT/PATCH by id reach the parser
        for url in (CONFIG, f"{CONFIG}/cfg"):
            response = client.request(
                method, url, content=raw, headers={"Content-Type": "application/json"}
            )
            assert 400 <= response.status_code < 500, (url, response.status_code, response.text)
            assert response.json().keys() >= ERROR_KEYS

    def test_huge_body_is_413(self, client: AppClient) -> None:
        _error(client.post(CONFIG, content=b"[" + b" " * 100_000 + b"]"), 413)


# --------------------------------------------------------------------------- FailoverState


class TestFailoverState:
    """``GET api/v1/diagnostics/FailoverState`` (seed 002; spec §5.2)."""

    def test_without_failover(self, client: AppClient) -> None:
        assert client.get(STATE).json() == {
            "Role": "Secondary",
            "LastDataProcessedTime": "0001-01-01T00:00:00",
            "FailoverStatus": "0",
            "AdapterState": "Running",
            "FailoverScore": 0.0,
            "Mode": None,
            "AppliedMode": None,
            "EndpointStatus": None,
            "LastError": None,
            "LastErrorTime": None,
            "NextAttemptTime": None,
            "Epoch": None,
            "GrantValidFor": None,
        }

    def test_the_seeds_example_shape(self, client: AppClient, runtime: FakeRuntime) -> None:
        """The seed's own example answer, property for property, then our extras."""
        when = dt.datetime(2021, 1, 1, tzinfo=dt.UTC)
        runtime.fixed_state = FailoverState(ClientRole.Primary, when, 95.0, epoch=7)
        body = client.get(STATE).json()
        assert dict(list(body.items())[:4]) == {
            "Role": "Primary",
            "LastDataProcessedTime": "2021-01-01T00:00:00",
            "FailoverStatus": "95",
            "AdapterState": "Running",
        }
        assert (body["FailoverScore"], body["Epoch"]) == (95.0, 7)

    @pytest.mark.parametrize(
        ("score", "text"),
        [
            (95.0, "95"),
            (100.0, "100"),
            (0.0, "0"),
            (99.5, "99.5"),
            (1 / 3, "0.33333334"),
            (0.1, "0.1"),
            (75.25, "75.25"),
            (1e-5, "1E-05"),
        ],
    )
    def test_failover_status_is_the_score_as_dotnet_writes_a_float(
        self, score: float, text: str
    ) -> None:
        assert format_score(score) == text

    def test_seed_times(self) -> None:
        assert format_seed_time(None) == "0001-01-01T00:00:00"
        assert format_seed_time(dt.datetime(2021, 1, 1)) == "2021-01-01T00:00:00"
        plus_two = dt.timezone(dt.timedelta(hours=2))
        when = dt.datetime(2021, 1, 1, 2, 0, 0, 250000, tzinfo=plus_two)
        assert format_seed_time(when) == "2021-01-01T00:00:00.25"

    def test_times_are_dotnet_utc(self) -> None:
        assert format_time(None) == "0001-01-01T00:00:00"
        naive = dt.datetime(2024, 5, 6, 7, 8, 9, 123456)
        assert format_time(naive) == "2024-05-06T07:08:09.1234560Z"
        plus_two = dt.timezone(dt.timedelta(hours=2))
        assert format_time(dt.datetime(2024, 5, 6, 9, 0, tzinfo=plus_two)).startswith(
            "2024-05-06T07:00:00"
        )
        assert format_time(dt.datetime.min) == "0001-01-01T00:00:00"

    def test_format_timeout(self) -> None:
        assert format_timeout(60) == "00:01:00"
        assert format_timeout(86_399) == "23:59:59"


# --------------------------------------------------------------------------- persistence


class TestPersistence:
    """The configuration survives a restart of the app, in the seed's own file form."""

    def test_restart_keeps_and_reapplies_the_configuration(self, tmp_path: Path) -> None:
        first = FakeRuntime()
        with AppClient(create_app(tmp_path, runtime=first)) as client:
            client.post(CONFIG, json=_with(Id="cfg", UserName="u", Password="pw"))
        assert first.closed
        second = FakeRuntime()
        with AppClient(create_app(tmp_path, runtime=second)) as client:
            assert client.get(CONFIG).json()[0]["Id"] == "cfg"
            assert second.applied[0] is not None and second.applied[0].password == "pw"
            client.delete(CONFIG)
        assert not (tmp_path / CONFIG_FILE).exists()
        third = FakeRuntime()
        with AppClient(create_app(tmp_path, runtime=third)) as client:
            assert client.get(CONFIG).json() == []

    def test_file_is_an_array_of_one_readable_by_its_owner_only(self, tmp_path: Path) -> None:
        store = ConfigStore(tmp_path / "config")
        store.save(parse_config(_with(Id="cfg", UserName="u", Password="pw")))
        path = tmp_path / "config" / CONFIG_FILE
        assert json.loads(path.read_text())[0]["Password"] == "pw"
        assert os.stat(path).st_mode & 0o077 == 0
        assert [p.name for p in path.parent.iterdir()] == [CONFIG_FILE]  # no temporary left
        assert store.load() == parse_config(_with(Id="cfg", UserName="u", Password="pw"))

    def test_the_seeds_file_loads(self, tmp_path: Path) -> None:
        (tmp_path / CONFIG_FILE).write_text(SEED_EXAMPLE)
        config = ConfigStore(tmp_path).load()
        assert config is not None and config.id == "FailoverConfiguration1"

    @pytest.mark.parametrize("text", ["{", '[{"Endpoint": "x"}]', "[1, 2]"])
    def test_a_damaged_file_stops_start_up(self, tmp_path: Path, text: str) -> None:
        (tmp_path / CONFIG_FILE).write_text(text)
        with pytest.raises(CfsError, match="damaged"):
            ConfigStore(tmp_path).load()

    def test_session_id_is_stable(self, tmp_path: Path) -> None:
        store = ConfigStore(tmp_path)
        assert store.session_id("first") == "first"
        assert ConfigStore(tmp_path).session_id("second") == "first"


# --------------------------------------------------------------------------- runtime


class FakeAgent:
    """The RunningAgent protocol, logging what the runtime asks of it."""

    def __init__(
        self, config: ClientFailoverConfig, session_id: str, restored: Restored, log: list[str]
    ) -> None:
        self.config, self.session_id, self.log = config, session_id, log
        self.restored = restored
        self.role = ClientRole.Secondary
        self.epoch: int | None = None
        self.server_last_data_processed: dt.datetime | None = None
        self.last_data_processed = restored.last_data_processed
        self.failover_score = 0.0
        self.mode = self.applied_mode = config.behaviour
        from cfs_cluster.agent.status import EndpointHealth

        self.endpoint_health = EndpointHealth()

    def grant_remaining(self) -> float:
        return 1.0 if self.role == ClientRole.Primary else 0.0

    async def start(self) -> None:
        self.log.append(f"start {self.config.failover_group_id} {self.session_id}")
        self.role = ClientRole.Primary

    async def stop(self, unregister: bool = True) -> None:
        self.log.append(f"stop {self.config.failover_group_id} unregister={unregister}")

    async def reconfigure(self, settings: Any) -> None:
        self.log.append(f"reconfigure {settings.group_id} timeout={settings.failover_timeout:g}")


def _config(**changes: Any) -> ClientFailoverConfig:
    return parse_config(_with(**{"Id": "cfg", "Mode": "Hot", **changes}))


class TestRuntime:
    """How configuration changes take effect at runtime (spec §5.3 item 6, §5.4)."""

    @pytest.mark.parametrize(
        ("old", "new", "action"),
        [
            (None, None, Action.NOTHING),
            (None, {}, Action.START),
            (None, {"Mode": "None"}, Action.NOTHING),
            (None, {"Mode": "NotConfigured"}, Action.NOTHING),
            ({}, None, Action.STOP),
            ({}, {"Mode": "None"}, Action.STOP),
            ({"Mode": "None"}, {"Mode": "Cold"}, Action.START),
            ({}, {"FailoverGroupId": "Line2"}, Action.RESTART),
            ({}, {"Endpoint": "http://other/api/v1/clientfailover"}, Action.RELOAD),
            ({}, {"ValidateEndpointCertificate": False}, Action.RELOAD),
            ({}, {"UserName": "u", "Password": "p"}, Action.RELOAD),
            ({}, {"ClientId": "c", "ClientSecret": "s"}, Action.RELOAD),
            ({}, {"FailoverTimeout": "00:00:30"}, Action.RELOAD),
            ({}, {"Mode": "Warm"}, Action.RELOAD),
            ({"Mode": "Warm"}, {"Mode": "Warn"}, Action.NOTHING),
            ({}, {"Name": "n", "Description": "d", "Id": "other"}, Action.NOTHING),
        ],
    )
    def test_plan(
        self, old: dict[str, Any] | None, new: dict[str, Any] | None, action: Action
    ) -> None:
        before = None if old is None else _config(**old)
        after = None if new is None else _config(**new)
        assert plan(before, after) is action

    def test_agent_runtime_applies_each_plan(self) -> None:
        asyncio.run(self._applies_each_plan())

    async def _applies_each_plan(self) -> None:
        log: list[str] = []
        runtime = AgentRuntime(
            session_id="s1", factory=lambda config, sid, rs: FakeAgent(config, sid, rs, log)
        )
        assert "registering session s1" in await runtime.apply(_config())
        await runtime.started()
        assert runtime.state().role is ClientRole.Primary
        await runtime.apply(_config(FailoverTimeout="00:00:30"))
        assert runtime.state().role is ClientRole.Primary  # the same agent: nothing restarted
        await runtime.apply(_config(FailoverTimeout="00:00:30", Endpoint="http://n2/api"))
        await runtime.apply(_config(FailoverGroupId="Line2"))
        await runtime.apply(_config(FailoverGroupId="Line2", Name="cosmetic"))
        await runtime.apply(None)
        assert runtime.state().role is ClientRole.Secondary
        await runtime.close()
        assert runtime.state().adapter_state == "Shutdown"
        assert log == [
            "start Line1 s1",
            "reconfigure Line1 timeout=30",
            "reconfigure Line1 timeout=30",
            "stop Line1 unregister=True",
            "start Line2 s1",
            "stop Line2 unregister=True",
        ]

    def test_close_unregisters(self) -> None:
        log: list[str] = []

        async def scenario() -> None:
            runtime = AgentRuntime(factory=lambda c, sid, rs: FakeAgent(c, sid, rs, log))
            await runtime.apply(_config())
            await runtime.close()

        asyncio.run(scenario())
        assert log[-1] == "stop Line1 unregister=True"


class TestSavedState:
    """``System_FailoverState`` (spec §5.7): saved on role or score changes, restored by rule."""

    @pytest.mark.parametrize(
        ("saved", "role"),
        [
            (None, ClientRole.Secondary),
            ({"Role": "Primary", "AdapterState": "Running"}, ClientRole.Secondary),  # a crash
            ({"Role": "Primary", "AdapterState": "Shutdown"}, ClientRole.Primary),  # graceful
            ({"Role": 1, "AdapterState": "Shutdown"}, ClientRole.Primary),
            ({"Role": "PendingPrimary", "AdapterState": "Shutdown"}, ClientRole.Secondary),
            ({"Role": "Boss", "AdapterState": "Shutdown"}, ClientRole.Secondary),
        ],
    )
    def test_restore_rule(self, saved: dict[str, Any] | None, role: ClientRole) -> None:
        from cfs_cluster.facet.failoverstate import restored_from

        assert restored_from(saved).role is role

    def test_the_saved_time_is_kept_either_way(self) -> None:
        from cfs_cluster.facet.failoverstate import restored_from

        saved = {
            "Role": "Primary",
            "AdapterState": "Running",
            "LastDataProcessedTime": "2024-05-06T07:08:09.0000000Z",
        }
        when = restored_from(saved).last_data_processed
        assert when == dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
        assert restored_from({"LastDataProcessedTime": "garbage"}).last_data_processed is None

    def test_runtime_saves_running_then_shutdown_and_restores(self, tmp_path: Path) -> None:
        log: list[str] = []
        agents: list[FakeAgent] = []

        def factory(config: ClientFailoverConfig, sid: str, rs: Restored) -> FakeAgent:
            agents.append(FakeAgent(config, sid, rs, log))
            return agents[-1]

        async def run_once() -> None:
            runtime = AgentRuntime(session_id="s", factory=factory, store=ConfigStore(tmp_path))
            await runtime.apply(_config())
            await runtime.started()
            agents[-1].failover_score = 100.0
            assert agents[-1].restored.on_change is not None
            agents[-1].restored.on_change()
            saved = ConfigStore(tmp_path).load_state()
            assert saved is not None
            assert (saved["Role"], saved["AdapterState"]) == ("Primary", "Running")
            await runtime.close()

        asyncio.run(run_once())
        saved = ConfigStore(tmp_path).load_state()
        assert saved == {
            "Role": "Primary",
            "LastDataProcessedTime": "0001-01-01T00:00:00",
            "FailoverScore": 100.0,
            "AdapterState": "Shutdown",
        }
        asyncio.run(run_once())
        assert agents[-1].restored.role is ClientRole.Primary

    def test_failover_off_deletes_the_state(self, tmp_path: Path) -> None:
        async def scenario() -> None:
            runtime = AgentRuntime(
                factory=lambda c, sid, rs: FakeAgent(c, sid, rs, []), store=ConfigStore(tmp_path)
            )
            await runtime.apply(_config())
            await runtime.started()
            runtime._on_agent_change()
            assert ConfigStore(tmp_path).load_state() is not None
            await runtime.apply(_config(Mode="None"))
            assert ConfigStore(tmp_path).load_state() is None
            await runtime.close()

        asyncio.run(scenario())


# --------------------------------------------------------------------------- embedding


def test_router_embeds_in_a_bare_app_and_renders_its_own_errors() -> None:
    """An adapter's own FastAPI app, with none of our exception handlers, still gets 400s."""
    app = FastAPI()
    app.include_router(create_router(ClientFailoverFacet(FakeRuntime())))
    with AppClient(app) as client:
        body = _error(client.post(CONFIG, json={"Endpoint": "http://x"}))
        assert "FailoverGroupId" in body["Reason"]
        assert client.post(CONFIG, json=MINIMAL).status_code == 201
        assert client.get(STATE).status_code == 200


def test_cli_has_a_facet_command() -> None:
    import argparse

    from cfs_cluster.cli.main import _facet_parser

    parser = argparse.ArgumentParser()
    _facet_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["facet", "--port", "5591", "--data-dir", "/tmp/x"])
    assert (args.command, args.port, args.data_dir, args.host) == (
        "facet",
        5591,
        "/tmp/x",
        "127.0.0.1",
    )


# --------------------------------------------------------------------------- health endpoints

HEALTH = "/api/v1/configuration/System/HealthEndpoints"
PI = {"Id": "PI", "Endpoint": "https://pi/piwebapi/omf", "UserName": "u", "Password": "pw"}


class TestHealthEndpoints:
    """The HealthEndpoints facet, configured as the adapter framework's (spec §6.2)."""

    def test_verbs_masking_and_persistence(self, tmp_path: Path) -> None:
        with AppClient(create_app(tmp_path, runtime=FakeRuntime())) as client:
            assert client.get(HEALTH).json() == []
            added = client.post(HEALTH, json={**PI, "Buffering": "None", "DebugExpiration": None})
            assert added.status_code == 201 and added.json()["Password"] == MASK
            _error(client.post(HEALTH, json={**PI, "Id": "pi"}), 409)
            again = client.put(f"{HEALTH}/pi", json={**PI, "Password": MASK})
            assert again.status_code == 200, again.text
            _error(client.put(f"{HEALTH}/other", json=PI), 404)
            _error(client.put(f"{HEALTH}/PI", json={**PI, "Id": "other"}))
        [stored] = json.loads((tmp_path / "System_HealthEndpoints.json").read_text())
        assert stored["Password"] == "pw"  # the mask sent back kept the secret
        with AppClient(create_app(tmp_path, runtime=FakeRuntime())) as client:
            assert [e["Id"] for e in client.get(HEALTH).json()] == ["PI"]
            cds = {"Endpoint": "https://cds/omf", "ClientId": "c", "ClientSecret": "s"}
            replaced = client.put(HEALTH, json=[PI, cds])
            assert replaced.status_code == 200 and len(replaced.json()) == 2
            assert client.delete(f"{HEALTH}/PI").status_code == 204
            _error(client.delete(f"{HEALTH}/PI"), 404)
            assert client.delete(HEALTH).status_code == 204
            assert client.get(HEALTH).json() == []

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"Id": "x"}, "Endpoint"),
            ({"Endpoint": "ftp://pi/omf"}, "Endpoint"),
            ({"Endpoint": "https://pi/omf", "UserName": "u"}, "Password"),
            ({"Endpoint": "https://pi/omf", "Password": MASK, "UserName": "u"}, "Password"),
            ({"Endpoint": "https://pi/omf", "Bogus": 1}, "Bogus"),
            (
                {"Endpoint": "https://pi/omf", "ValidateEndpointCertificate": "no"},
                "ValidateEndpointCertificate",
            ),
            ([PI, {**PI, "Id": "pi"}], "Id"),
        ],
    )
    def test_bad_input_is_a_400_naming_the_field(
        self, client: AppClient, body: Any, field: str
    ) -> None:
        error = _error(client.post(HEALTH, json=body))
        assert field in error["Reason"], error
        assert client.get(HEALTH).json() == []

    def test_garbage_is_a_4xx(self, client: AppClient) -> None:
        _error(client.post(HEALTH, content=b"{nope"))
        _error(client.post(HEALTH, json=5))
        _error(client.put(HEALTH, json=[PI] * 17))


def test_endpoint_status_names_each_failure() -> None:
    from cfs_cluster.agent.status import EndpointStatus, endpoint_status
    from cfs_cluster.agent.transport import (
        EndpointNotFound,
        EndpointUnavailable,
        RateLimited,
        Refused,
        Unreachable,
    )

    assert endpoint_status(Unreachable("x")) is EndpointStatus.Unreachable
    assert endpoint_status(EndpointUnavailable("x", status=503)) is EndpointStatus.Unavailable
    assert endpoint_status(RateLimited("x", status=429)) is EndpointStatus.RateLimited
    assert endpoint_status(EndpointNotFound("x", status=404)) is EndpointStatus.GroupNotFound
    for status in (401, 403):
        assert endpoint_status(Refused("x", status=status)) is EndpointStatus.CredentialsRefused
    assert endpoint_status(Refused("x", status=400)) is EndpointStatus.Refused
