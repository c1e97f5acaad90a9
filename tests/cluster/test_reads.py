"""Consistent reads (issue 14): write through one node, read through another at once.

Every kind of replicated state, and the leader's live liveness in session views, is written
through node i and read through node i+1 in the very next request, many times; any stale
answer fails. Real `cfs serve` processes (tests/clusterkit.py), auth on (a bootstrap admin).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.clusterkit import Cluster

ROUNDS = 50
ADMIN = ("admin", "reads-admin-password")
API = "/api/v1/clientfailover"
GROUPS = f"{API}/groups"
TOKEN = "/identity/connect/token"
KEYS = "/api/v1/identity/signing-keys"


def basic(name: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}


ADMIN_AUTH = basic(*ADMIN)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    env = {"CFS_BOOTSTRAP_ADMIN": f"{ADMIN[0]}:{ADMIN[1]}"}
    with Cluster(tmp_path_factory.mktemp("reads"), size=3, env=env) as c:
        deadline = time.monotonic() + 30
        for url in c.urls:  # the bootstrap admin applied (and its password cached) everywhere
            while c.client.get(url + "/api/v1/users", headers=ADMIN_AUTH).status_code != 200:
                assert time.monotonic() < deadline, "bootstrap admin never applied"
                time.sleep(0.05)
        yield c


class Pair:
    """Round ``i`` writes through one node and reads through the next one."""

    def __init__(self, cluster: Cluster, i: int) -> None:
        self.http = cluster.client
        self.writer = cluster.urls[i % 3]
        self.reader = cluster.urls[(i + 1) % 3]
        self.third = cluster.urls[(i + 2) % 3]

    def write(self, method: str, path: str, **kw: Any) -> httpx.Response:
        response = self.http.request(method, self.writer + path, headers=ADMIN_AUTH, **kw)
        assert response.is_success, (method, path, response.status_code, response.text)
        return response

    def read(self, path: str, url: str | None = None, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", ADMIN_AUTH)
        return self.http.get((url or self.reader) + path, headers=headers, **kw)


def stale_rounds(cluster: Cluster, check: Callable[[Pair, int], bool]) -> list[int]:
    return [i for i in range(ROUNDS) if not check(Pair(cluster, i), i)]


def group(p: Pair, gid: str, timeout: str = "00:00:30") -> None:
    p.write("POST", GROUPS, json={"Id": gid, "FailoverTimeout": timeout})


# --------------------------------------------------------------------------- one per kind


def _groups(p: Pair, i: int) -> bool:
    group(p, f"grp-{i}")
    return p.read(f"{GROUPS}/grp-{i}").status_code == 200


def _sessions(p: Pair, i: int) -> bool:
    group(p, f"ses-{i}")
    p.write("POST", f"{GROUPS}/ses-{i}/clientsessions", json={"Id": "a"})
    return p.read(f"{GROUPS}/ses-{i}/clientsessions/a").status_code == 200


def _heartbeat_data(p: Pair, i: int) -> bool:
    """The README walkthrough: heartbeat, then list sessions, on other nodes."""
    gid = f"hb-{i}"
    group(p, gid)
    p.write("POST", f"{GROUPS}/{gid}/clientsessions", json={"Id": "a"})
    p.write("POST", f"{GROUPS}/{gid}/clientsessions/a/heartbeat", json={"FailoverScore": 1})
    score = 10 + i
    p.write(
        "POST",
        f"{GROUPS}/{gid}/clientsessions/a/heartbeat",
        json={"FailoverScore": score, "LastDataProcessedTime": f"2026-01-01T00:00:{i:02d}Z"},
    )
    listed = p.read(f"{GROUPS}/{gid}/clientsessions").json()
    one = p.read(f"{GROUPS}/{gid}/clientsessions/a", url=p.third).json()
    status = p.read(f"{GROUPS}/{gid}/status").json()
    return (
        listed[0]["HeartbeatPosted"] is True
        and listed[0]["Heartbeat"]["FailoverScore"] == score
        and one["Heartbeat"]["FailoverScore"] == score
        and listed[0]["Role"] == 1
        and status["LastDataProcessedTime"] == f"2026-01-01T00:00:{i:02d}.0000000Z"
    )


def _status_after_grant(p: Pair, i: int) -> bool:
    gid = f"grant-{i}"
    group(p, gid)
    p.write("POST", f"{GROUPS}/{gid}/clientsessions", json={"Id": "a"})
    answer = p.write(
        "POST", f"{GROUPS}/{gid}/clientsessions/a/heartbeat", json={"FailoverScore": 5}
    )
    assert answer.json()["Role"] == 1  # a lone session is granted at once
    status = p.read(f"{GROUPS}/{gid}/status").json()
    role = p.read(f"{GROUPS}/{gid}/clientsessions/a/role", url=p.third).json()
    return status["Primary"] == "a" and status["Epoch"] >= 1 and role["Role"] == 1


def _overrides(p: Pair, i: int) -> bool:
    gid = f"ovr-{i}"
    group(p, gid)
    for sid in ("a", "b"):
        p.write("POST", f"{GROUPS}/{gid}/clientsessions", json={"Id": sid})
    p.write("POST", f"{GROUPS}/{gid}/clientsessions/b/roleoverride", json={"Value": "Primary"})
    session = p.read(f"{GROUPS}/{gid}/clientsessions/b").json()
    status = p.read(f"{GROUPS}/{gid}/status", url=p.third).json()
    return session["RoleOverride"] == 1 and session["Role"] == 1 and status["Primary"] == "b"


def _configuration(p: Pair, i: int) -> bool:
    level = ("Warning", "Information", "Error")[i % 3]
    p.write("PUT", "/api/v1/configuration", json={"Logging": {"LogLevel": level}})
    return p.read("/api/v1/configuration").json()["Logging"]["LogLevel"] == level


def _log_level(p: Pair, i: int) -> bool:
    level = ("Error", "Warning", "Information")[i % 3]
    p.write("PUT", "/api/v1/configuration/logging", json={"LogLevel": level})
    seen = p.read("/api/v1/configuration/logging").json()
    return seen == {"LogLevel": level, "EffectiveLogLevel": level}


def _health_endpoints(p: Pair, i: int) -> bool:
    hid = f"omf-{i}"
    endpoint = {"Id": hid, "Endpoint": "https://127.0.0.1:9/omf"}
    p.write("POST", "/api/v1/configuration/healthEndpoints", json=endpoint)
    found = p.read(f"/api/v1/configuration/healthEndpoints/{hid}").status_code == 200
    p.write("DELETE", f"/api/v1/configuration/healthEndpoints/{hid}")  # no OMF posts pile up
    gone = p.read(f"/api/v1/configuration/healthEndpoints/{hid}", url=p.third).status_code == 404
    return found and gone


def _users(p: Pair, i: int) -> bool:
    name, password = f"user-{i}", f"password-of-user-{i}"
    p.write("POST", "/api/v1/users", json={"Name": name, "Password": password, "Role": "users"})
    listed = p.read(f"/api/v1/users/{name}").status_code == 200
    # Authentication never fails for lag: the new user is accepted by another node at once.
    own = p.read(GROUPS, url=p.third, headers=basic(name, password)).status_code == 200
    return listed and own


def _oauth_clients_and_tokens(p: Pair, i: int) -> bool:
    cid = f"client-{i}"
    secret = p.write("POST", "/api/v1/clients", json={"ClientId": cid}).json()["ClientSecret"]
    form = {"grant_type": "client_credentials", "client_id": cid, "client_secret": secret}
    issued = p.http.post(p.reader + TOKEN, data=form)  # the token endpoint of another node
    if issued.status_code != 200:
        return False
    bearer = {"Authorization": f"Bearer {issued.json()['access_token']}"}
    used = p.read(GROUPS, url=p.third, headers=bearer).status_code == 200  # a third node
    listed = p.read(f"/api/v1/clients/{cid}", url=p.third).status_code == 200
    return used and listed


def _signing_keys(p: Pair, i: int) -> bool:
    keys = p.write("POST", f"{KEYS}/rotate").json()
    current = next(k["Kid"] for k in keys if k["Current"])
    seen = p.read(KEYS).json()
    return any(k["Kid"] == current and k["Current"] for k in seen)


KINDS = {
    "groups": _groups,
    "sessions": _sessions,
    "heartbeat data in session views": _heartbeat_data,
    "status after a grant": _status_after_grant,
    "overrides": _overrides,
    "configuration": _configuration,
    "log level": _log_level,
    "health endpoints": _health_endpoints,
    "users": _users,
    "oauth clients and tokens": _oauth_clients_and_tokens,
    "signing keys": _signing_keys,
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_write_through_one_node_is_read_through_another_at_once(
    cluster: Cluster, kind: str
) -> None:
    stale = stale_rounds(cluster, lambda p, i: KINDS[kind](p, i))
    assert not stale, f"{kind}: stale in {len(stale)} of {ROUNDS} rounds: {stale}"


def test_a_token_issued_after_a_key_rotation_is_accepted_everywhere(cluster: Cluster) -> None:
    """The kid a new token names was rotated in through another node moments before."""
    p = Pair(cluster, 0)
    secret = p.write("POST", "/api/v1/clients", json={"ClientId": "rotating"}).json()[
        "ClientSecret"
    ]
    form = {"grant_type": "client_credentials", "client_id": "rotating", "client_secret": secret}
    refused = []
    for i in range(ROUNDS):
        q = Pair(cluster, i)
        q.write("POST", f"{KEYS}/rotate")
        token = q.http.post(q.writer + TOKEN, data=form).json()["access_token"]
        answer = q.read(GROUPS, headers={"Authorization": f"Bearer {token}"})
        if answer.status_code != 200:
            refused.append(i)
    assert not refused, f"refused in {len(refused)} of {ROUNDS} rounds"


def test_a_new_secret_is_accepted_everywhere_at_once(cluster: Cluster) -> None:
    """A secret rotated through one node: the token endpoint of another takes the new one."""
    p = Pair(cluster, 0)
    p.write("POST", "/api/v1/clients", json={"ClientId": "resecret"})
    refused = []
    for i in range(ROUNDS):
        q = Pair(cluster, i)
        secret = q.write("POST", "/api/v1/clients/resecret/secret").json()["ClientSecret"]
        form = {
            "grant_type": "client_credentials",
            "client_id": "resecret",
            "client_secret": secret,
        }
        if q.http.post(q.reader + TOKEN, data=form).status_code != 200:
            refused.append(i)
    assert not refused, f"refused in {len(refused)} of {ROUNDS} rounds"


# --------------------------------------------------------------------------- stale, paging


def test_stale_reads_answer_locally_and_say_how_far_behind(cluster: Cluster) -> None:
    p = Pair(cluster, 0)
    group(p, "stale-g")
    for url in cluster.urls:
        for query in ("?stale=true", "?stale", "?STALE=1"):
            answer = p.read(f"{GROUPS}{query}", url=url)
            assert answer.status_code == 200, answer.text
            assert int(answer.headers["X-CFS-Applied-Index"]) > 0
            assert answer.headers["X-CFS-Last-Contact"].isdigit()  # ms; 0 on the leader
        consistent = p.read(f"{GROUPS}?stale=false", url=url)
        assert consistent.status_code == 200 and "X-CFS-Last-Contact" not in consistent.headers
        assert int(consistent.headers["X-CFS-Applied-Index"]) > 0
        # Unknown parameters keep working as before (adapters may send anything).
        assert p.read(f"{GROUPS}/stale-g?foo=bar&x", url=url).status_code == 200
        bad = p.read(f"{GROUPS}?stale=maybe", url=url)
        assert bad.status_code == 400 and bad.json()["AdditionalParameters"] == {"stale": "maybe"}


def test_a_keyed_walk_over_a_changing_set_neither_repeats_nor_skips(cluster: Cluster) -> None:
    p = Pair(cluster, 0)
    stable = [f"walk-{n:02d}" for n in range(0, 40, 2)]
    for gid in stable:
        group(p, gid)
    seen: list[str] = []
    after, n = "walk-", 0
    while True:
        page = p.read(f"{GROUPS}?after={after}&count=3").json()
        page = [g["Id"] for g in page if g["Id"].startswith("walk-")]
        if not page:
            break
        seen += page
        after = page[-1]
        # Meanwhile the set changes before and after the cursor.
        group(p, f"walk-{n:02d}x")  # sorts right after walk-NN
        p.write("DELETE", f"{GROUPS}/walk-{n:02d}x")
        group(p, f"walk-0{n}-new")
        n += 1
    assert [g for g in seen if g in stable] == stable  # each once, in order
    assert len(seen) == len(set(seen))
    ids = [g["Id"] for g in p.read(f"{GROUPS}?count=10000").json()]
    assert ids == sorted(ids)


# --------------------------------------------------------------------------- leader change


def test_reads_stay_consistent_while_leadership_moves(cluster: Cluster) -> None:
    """A transfer mid-loop: every read either sees the write or answers 503 + Retry-After."""
    stale, unavailable = [], 0
    for i in range(ROUNDS):
        p = Pair(cluster, i)
        if i in (15, 35):
            p.write("POST", "/api/v1/cluster/transfer-leader", json={})
        group(p, f"moving-{i}")
        deadline = time.monotonic() + 10
        while (answer := p.read(f"{GROUPS}/moving-{i}")).status_code == 503:
            assert "Retry-After" in answer.headers
            unavailable += 1
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.05)
        if answer.status_code != 200:
            stale.append(i)
    assert not stale, f"stale in {len(stale)} of {ROUNDS} rounds ({unavailable} answers 503)"


def test_reads_without_a_leader_answer_503_not_stale_data(tmp_path: Path) -> None:
    with Cluster(tmp_path, size=3) as c:
        survivor = c.urls[0]
        assert c.client.post(survivor + GROUPS, json={"Id": "g", "FailoverTimeout": "00:00:10"})
        for node in c.nodes[1:]:
            node.kill()
        deadline = time.monotonic() + 10
        while (answer := c.client.get(survivor + f"{GROUPS}/g")).status_code == 200:
            assert time.monotonic() < deadline, "a node without a majority kept answering"
            time.sleep(0.05)
        assert answer.status_code == 503 and "Retry-After" in answer.headers, answer.text
        stale = c.client.get(survivor + f"{GROUPS}/g?stale=true")
        assert stale.status_code == 200 and stale.headers["X-CFS-Applied-Index"].isdigit()
