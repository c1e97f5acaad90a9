"""Global configuration over REST: log level and health endpoints (spec §2.3 rows 13-16, §6.2, §7).

Validation runs against one real single-node `cfs serve`; replication of the log level against a
3-node cluster, through one node, seen (and applied) on every node, and kept across a restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.clusterkit import Cluster

from cfs_cluster.engine import configuration as config

pytestmark = pytest.mark.cluster

CONF = "/api/v1/configuration"
EP = f"{CONF}/healthEndpoints"
PIWEBAPI = {
    "Id": "pi1",
    "Endpoint": "https://pi.example.test/piwebapi/omf/",
    "UserName": "svc",
    "Password": "s3cret-pw",
}
CONNECT = {
    "Id": "adh",
    "Endpoint": "https://adh.example.test/api/v1/Tenants/t/Namespaces/n/omf",
    "ClientId": "cid",
    "ClientSecret": "very-secret",
}


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("single"), size=1) as cluster:
        yield cluster


@pytest.fixture
def api(single: Cluster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=single.nodes[0].url, timeout=10) as client:
        assert client.delete(EP).status_code == 204
        yield client


def _wait(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


# --------------------------------------------------------------------------- unit: parsing


def test_levels_parse_case_insensitively_and_by_number() -> None:
    assert config.parse_log_level("debug") == "Debug"
    assert config.parse_log_level("VERBOSE") == "Verbose"
    assert config.parse_log_level(5) == "Fatal"
    for bad in ("Trace", "", None, 6, True, 2.5):
        with pytest.raises(config.BadRequest):
            config.parse_log_level(bad)


def test_endpoint_repr_never_shows_secrets() -> None:
    endpoint = config.parse_endpoint(PIWEBAPI)
    assert "s3cret-pw" not in repr(endpoint)
    assert "very-secret" not in repr(config.parse_endpoint(CONNECT))


def test_endpoint_urls_follow_the_facets_rules() -> None:
    # One validator for both APIs: a URL with a space or control character is refused here too.
    for bad in ("https://pi/omf path", "https://pi/omf\t"):
        with pytest.raises(config.BadRequest, match="spaces or control"):
            config.parse_endpoint({"Endpoint": bad})


def test_a_mask_keeps_the_secret_only_for_the_same_account() -> None:
    stored = config.parse_endpoint(PIWEBAPI)
    for changed in ({"UserName": "someone-else"}, {}):
        sent = config.parse_endpoint({**PIWEBAPI, **changed, "Password": config.MASK})
        if changed:
            with pytest.raises(config.BadRequest, match="mask"):
                config.unmask(sent, stored)
        else:
            assert config.unmask(sent, stored).password == stored.password


# --------------------------------------------------------------------------- REST: logging


def test_logging_get_put_and_validation(api: httpx.Client) -> None:
    response = api.put(f"{CONF}/logging", json={"LogLevel": "Warning"})
    assert response.status_code == 200, response.text
    assert response.json() == {"LogLevel": "Warning"}
    body = api.get(f"{CONF}/Logging/").json()  # routes are case-insensitive, trailing slash ok
    assert body["LogLevel"] == "Warning"
    assert _wait(lambda: api.get(f"{CONF}/logging").json()["EffectiveLogLevel"] == "Warning")
    for bad in ({"LogLevel": "Loud"}, {}, ["Debug"], {"LogLevel": None}):
        response = api.put(f"{CONF}/logging", json=bad)
        assert response.status_code == 400, (bad, response.text)
        assert set(response.json()) >= {"OperationId", "Error", "Reason", "Resolution"}
    response = api.put(f"{CONF}/logging", content=b"{not json")
    assert response.status_code == 400
    assert api.put(f"{CONF}/logging", json={"loglevel": "information"}).status_code == 200


# --------------------------------------------------------------------------- REST: endpoints


def test_health_endpoint_collection_crud(api: httpx.Client) -> None:
    created = api.post(EP, json=PIWEBAPI)
    assert created.status_code == 201, created.text
    assert created.json()["Password"] == config.MASK
    # POST an array; fails as a whole if any Id exists.
    clash = api.post(EP, json=[CONNECT, {**PIWEBAPI, "Id": "PI1"}])
    assert clash.status_code == 409, clash.text
    assert [e["Id"] for e in api.get(EP).json()] == ["pi1"]
    assert api.post(EP, json=[CONNECT]).status_code == 201
    listed = api.get(EP).json()
    assert [e["Id"] for e in listed] == ["pi1", "adh"]
    assert listed[1]["ClientSecret"] == config.MASK
    assert "s3cret-pw" not in api.get(CONF).text and "very-secret" not in api.get(CONF).text
    one = api.get(f"{EP}/adh")
    assert one.status_code == 200 and one.json()["ClientId"] == "cid"
    assert api.get(f"{EP}/nope").status_code == 404
    # PUT by id: update; 404 for an unknown id; the body Id must match.
    update = {**PIWEBAPI, "Endpoint": "https://pi2.example.test/piwebapi/omf/"}
    assert api.put(f"{EP}/pi1", json=update).status_code == 200
    assert api.get(f"{EP}/pi1").json()["Endpoint"].startswith("https://pi2.")
    assert api.put(f"{EP}/nope", json=update).status_code == 404
    assert api.put(f"{EP}/pi1", json={**update, "Id": "other"}).status_code == 400
    # PUT the collection replaces everything; DELETE by id and all.
    replaced = api.put(EP, json=[{"Id": "x", "Endpoint": "http://127.0.0.1:9/omf"}])
    assert replaced.status_code == 200, replaced.text
    assert [e["Id"] for e in api.get(EP).json()] == ["x"]
    assert api.put(EP, json={"Id": "y", "Endpoint": "http://h/omf"}).status_code == 400
    assert api.delete(f"{EP}/x").status_code == 204
    assert api.delete(f"{EP}/x").status_code == 404
    assert api.post(EP, json=[CONNECT, PIWEBAPI]).status_code == 201
    assert api.delete(EP).status_code == 204
    assert api.get(EP).json() == []


def test_post_without_id_gets_a_guid_and_deprecated_properties_are_ignored(
    api: httpx.Client,
) -> None:
    body = {
        "Endpoint": "https://pi.example.test/piwebapi/omf/",
        "Buffering": 1,
        "MaxBufferSizeMB": 5,
    }
    created = api.post(EP, json=body)
    assert created.status_code == 201, created.text
    new_id = created.json()["Id"]
    assert len(new_id) == 36 and api.get(f"{EP}/{new_id}").status_code == 200
    assert "Buffering" not in created.json()


@pytest.mark.parametrize(
    "body, words",
    [
        ({}, "Endpoint is required"),
        ({"Endpoint": "ftp://x/omf"}, "http"),
        ({"Endpoint": "not a url"}, "http"),
        ({"Endpoint": "https://user:pw@pi/omf"}, "credentials"),
        ({"Endpoint": "https://pi/omf", "UserName": "u"}, "go together"),
        ({"Endpoint": "https://pi/omf", "ClientSecret": "s"}, "go together"),
        (
            {
                "Endpoint": "https://pi/omf",
                "UserName": "u",
                "Password": "p",
                "ClientId": "c",
                "ClientSecret": "s",
            },
            "not both",
        ),
        ({"Endpoint": "https://pi/omf", "TokenEndpoint": "https://t/token"}, "ClientId"),
        ({"Endpoint": "https://pi/omf", "ValidateEndpointCertificate": "no"}, "true or false"),
        ({"Endpoint": "https://pi/omf", "Id": "a/b c"}, "Id must"),
        ({"Endpoint": "https://pi/omf", "UserName": "u", "Password": config.MASK}, "mask"),
        (
            [{"Id": "d", "Endpoint": "https://a/omf"}, {"Id": "D", "Endpoint": "https://b/omf"}],
            "more than once",
        ),
        ("just text", "object"),
    ],
)
def test_invalid_endpoints_get_clear_400s(api: httpx.Client, body: Any, words: str) -> None:
    response = api.post(EP, json=body)
    assert response.status_code == 400, response.text
    assert words.lower() in response.json()["Reason"].lower()
    assert api.get(EP).json() == []


def test_masked_secret_sent_back_keeps_the_stored_one(api: httpx.Client, single: Cluster) -> None:
    assert api.post(EP, json=PIWEBAPI).status_code == 201
    document = api.get(CONF).json()
    assert document["HealthEndpoints"][0]["Password"] == config.MASK
    document["HealthEndpoints"][0]["Endpoint"] = "https://pi3.example.test/piwebapi/omf/"
    response = api.put(CONF, json=document)  # a GET, edited, PUT back
    assert response.status_code == 200, response.text
    assert response.json()["HealthEndpoints"][0]["Endpoint"].startswith("https://pi3.")
    # The stored password is the real one: no log line ever shows it either.
    log_text = single.nodes[0].log_path.read_text(errors="replace")
    assert "s3cret-pw" not in log_text and "Health endpoints replaced" in log_text


def test_global_configuration_put_sets_both_sections(api: httpx.Client) -> None:
    body = {"logging": {"loglevel": "Debug"}, "healthendpoints": [CONNECT]}
    response = api.put(CONF, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["Logging"]["LogLevel"] == "Debug"
    assert [e["Id"] for e in response.json()["HealthEndpoints"]] == ["adh"]
    assert api.put(CONF, json={}).status_code == 400
    assert api.put(CONF, json={"Logging": {"LogLevel": "Information"}}).status_code == 200
    assert [e["Id"] for e in api.get(CONF).json()["HealthEndpoints"]] == ["adh"]  # unchanged


# --------------------------------------------------------------------------- cluster


def _levels(cluster: Cluster) -> list[tuple[str, str] | None]:
    result: list[tuple[str, str] | None] = []
    for node in cluster.nodes:
        try:
            body = cluster.client.get(node.url + f"{CONF}/logging", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            result.append(None)
            continue
        result.append((body["LogLevel"], body["EffectiveLogLevel"]))
    return result


def test_log_level_set_through_one_node_applies_on_all_and_survives_restart(tmp_path: Path) -> None:
    with Cluster(tmp_path, size=3) as cluster:
        follower = next(i for i in range(3) if i != cluster.leader_index())
        url = cluster.nodes[follower].url + f"{CONF}/logging"
        response = cluster.client.put(url, json={"LogLevel": "Debug"})
        assert response.status_code == 200, response.text
        # Replicated: every node reports it and switched its own level (poll, bounded).
        assert _wait(lambda: _levels(cluster) == [("Debug", "Debug")] * 3, 5), _levels(cluster)
        for i in range(3):
            assert "Log level changed to Debug" in cluster.nodes[i].log_path.read_text()
        for node in cluster.nodes:
            node.terminate()
        for node in cluster.nodes:
            node.start()
        cluster.wait_ready()
        assert _wait(lambda: _levels(cluster) == [("Debug", "Debug")] * 3, 10), _levels(cluster)
