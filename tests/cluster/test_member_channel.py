"""The members' internal channel (issue 11 items 4 and 7): signed member-to-member requests,
relayed heartbeats held to the direct checks, forwarded identities instead of credentials, and
TLS between members (pinned leaves or the members' CA), with readiness that follows the relay.

Real `cfs serve` processes throughout; the member key a test signs with is read from an
administrator's backup, as an operator holding the data directory could.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.clusterkit import Cluster

ADMIN = ("root", "s3cret-admin")
ADAPTER = ("plc", "plc-password")
GROUPS = "/api/v1/clientfailover/groups"
RELAY = "/_cluster/heartbeats"
RATE_LIMIT = 5.0  # seconds per heartbeat after a burst of 10, in the shared cluster


def basic(name: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def old_relay_token(raft_password: str | None) -> str:
    """The token the relay trusted before: one HMAC of the Raft password (or, in --dev, a
    constant published in the source) over a constant."""
    key = (raft_password or "cfs-dev-cluster").encode()
    return hmac.new(key, b"cfs-relay-v1", hashlib.sha256).hexdigest()


def assert_refused(response: httpx.Response, status: int = 401) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert {"OperationId", "Error", "Reason", "Resolution"} <= response.json().keys()


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def member_key(client: httpx.Client, url: str) -> Any:
    """The current member key, from an administrator's backup of the replicated state."""
    from cfs_cluster.ops.backup import read_backup

    response = client.get(url + "/api/v1/cluster/backup", headers=basic(*ADMIN))
    assert response.status_code == 200, response.text
    return read_backup(response.content).state.member_keys[-1]


def signature(
    key: Any,
    method: str,
    target: str,
    body: bytes,
    audience: str,
    caller: tuple[str, str] | None = None,
    skew: float = 0.0,
) -> str:
    """An ``X-CFS-Member`` value made as a member makes it, with ``key``."""
    from cfs_cluster.security.memberauth import Caller, MemberAuth

    auth = MemberAuth(lambda: [key], "test", clock=lambda: time.time() + skew)
    return auth.sign(method, target, body, audience, None if caller is None else Caller(*caller))


def batch(*items: list[Any]) -> bytes:
    return json.dumps(list(items)).encode()


def setup_group(client: httpx.Client, url: str, group: str, sessions: list[str]) -> None:
    admin = basic(*ADMIN)
    body = {"Id": group, "FailoverTimeout": "00:00:30"}
    assert client.post(url + GROUPS, json=body, headers=admin).status_code in (200, 201)
    for session in sessions:
        answer = client.post(
            f"{url}{GROUPS}/{group}/clientsessions", json={"Id": session}, headers=admin
        )
        assert answer.status_code in (200, 201), answer.text


def primary_of(client: httpx.Client, url: str, group: str) -> str | None:
    answer = client.get(f"{url}{GROUPS}/{group}/status", headers=basic(*ADMIN))
    assert answer.status_code == 200, answer.text
    primary: str | None = answer.json()["Primary"]
    return primary


def wait_admin(cluster: Cluster) -> None:
    for url in cluster.urls:
        wait_until(
            lambda url=url: (
                cluster.client.get(url + GROUPS, headers=basic(*ADMIN)).status_code == 200
            ),
            f"bootstrap administrator never reached {url}",
        )


# --------------------------------------------------------------------------- a recording proxy


class RecordingProxy:
    """A TCP relay in front of one node's API that keeps every byte sent *to* the node: what
    the other members send it, seen from its side of the wire."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._received = bytearray()
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def received(self) -> bytes:
        with self._lock:
            return bytes(self._received)

    def _accept(self) -> None:
        while not self._closed:
            try:
                downstream, _ = self._listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self._target), timeout=5)
            except OSError:
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [downstream, upstream]
            threading.Thread(
                target=self._pump, args=(downstream, upstream, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(upstream, downstream, False), daemon=True
            ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, record: bool) -> None:
        try:
            while data := source.recv(65536):
                if record:
                    with self._lock:
                        self._received += data
                sink.sendall(data)
        except OSError:
            pass  # either side closed: shut both down
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()


# --------------------------------------------------------------------------- one node, --auth required


@pytest.mark.cluster
def test_forged_replayed_stale_and_unsigned_relays_are_refused(tmp_path: Path) -> None:
    """Against a real node with --auth required: every relay call that a member did not sign
    for this node, now, once, is refused with a 4xx ErrorResponse and changes nothing."""
    env = {"CFS_BOOTSTRAP_ADMIN": f"{ADMIN[0]}:{ADMIN[1]}"}
    with Cluster(tmp_path, size=1, extra_args=["--auth", "required"], env=env) as cluster:
        client, url = cluster.client, cluster.urls[0]
        wait_admin(cluster)
        setup_group(client, url, "g1", ["s1"])
        setup_group(client, url, "g2", ["s2"])
        attack = batch(["g1", "s1", 100, None, None])
        unsigned: list[dict[str, str | bytes]] = [
            {"x-cfs-relay": old_relay_token(None)},  # the --dev constant: no Raft password
            {"x-cfs-relay": "é".encode("latin-1")},
            {},
            {"x-cfs-member": "v1.ü.1.2.3.4.5".encode("latin-1")},
            {"x-cfs-member": "v1.garbage"},
            {"x-cfs-member": "Basic cm9vdDpzM2NyZXQtYWRtaW4="},
        ]
        for headers in unsigned:
            assert_refused(client.post(url + RELAY, content=attack, headers=headers))
        for spelling in ("/_CLUSTER/heartbeats", "/_clu%C5%BFter/heartbeats", "/_cluster/ping"):
            answer = client.request("POST", url + spelling, content=attack)
            assert 400 <= answer.status_code < 500, (spelling, answer.status_code)
        assert primary_of(client, url, "g1") is None

        key = member_key(client, url)
        forged_key = type(key)(key.kid, "00" * 32, key.created_at)
        node_id = cluster.nodes[0].node_id
        forged = [
            signature(forged_key, "POST", RELAY, attack, node_id),  # unknown secret
            signature(key, "POST", RELAY, attack, node_id, skew=-600),  # stale
            signature(key, "POST", RELAY, attack, node_id, skew=+600),  # from the future
            signature(key, "POST", RELAY, attack, "n9"),  # meant for another member
            signature(key, "POST", RELAY, batch(["g2", "s2", 1, None, None]), node_id),  # body
            signature(key, "POST", "/_cluster/ping", attack, node_id),  # path
            signature(key, "GET", RELAY, attack, node_id),  # method
        ]
        for value in forged:
            assert_refused(
                client.post(url + RELAY, content=attack, headers={"x-cfs-member": value})
            )
        assert primary_of(client, url, "g1") is None

        genuine = batch(["g2", "s2", 1, None, None])
        headers = {"x-cfs-member": signature(key, "POST", RELAY, genuine, node_id)}
        first = client.post(url + RELAY, content=genuine, headers=headers)
        assert first.status_code == 200, first.text
        assert first.json()[0]["ok"][0] == 1  # the key holder made s2 Primary
        assert_refused(client.post(url + RELAY, content=genuine, headers=headers))  # a replay
        # A claimed identity is only as good as its signature: no admin call through it.
        forged_admin = {
            "x-cfs-member": signature(
                forged_key, "GET", "/api/v1/users", b"", node_id, ("root", "administrators")
            )
        }
        assert_refused(client.get(url + "/api/v1/users", headers=forged_admin))
        assert primary_of(client, url, "g1") is None


# --------------------------------------------------------------------------- three nodes


@pytest.fixture(scope="module")
def members(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Cluster, list[RecordingProxy]]]:
    """Three nodes with a bootstrap administrator and a heartbeat rate limit; each publishes a
    recording proxy in front of its API as its --advertise-url, so every byte one member sends
    another passes a proxy the test reads."""
    env = {"CFS_BOOTSTRAP_ADMIN": f"{ADMIN[0]}:{ADMIN[1]}"}
    args = ["--heartbeat-rate-limit", str(RATE_LIMIT)]
    cluster = Cluster(tmp_path_factory.mktemp("members"), size=3, extra_args=args, env=env)
    proxies = [RecordingProxy(node.api_port) for node in cluster.nodes]
    for node, proxy in zip(cluster.nodes, proxies, strict=True):
        node.extra_args += ["--advertise-url", f"http://127.0.0.1:{proxy.port}"]
    try:
        with cluster:
            wait_admin(cluster)
            add = {"Name": ADAPTER[0], "Password": ADAPTER[1], "Role": "users"}
            created = cluster.client.post(
                cluster.urls[0] + "/api/v1/users", json=add, headers=basic(*ADMIN)
            )
            assert created.status_code == 201, created.text
            for url in cluster.urls:
                wait_until(
                    lambda url=url: (
                        cluster.client.get(url + GROUPS, headers=basic(*ADAPTER)).status_code == 200
                    ),
                    "adapter account never replicated",
                )
            yield cluster, proxies
    finally:
        for proxy in proxies:
            proxy.close()


def roles(cluster: Cluster) -> tuple[int, list[int]]:
    """(leader, followers) as the leader itself says, asked with the administrator's
    credentials (``Cluster.leader_index`` asks without)."""
    found: list[int] = []

    def leader_agrees() -> bool:
        for i, node in enumerate(cluster.nodes):
            view = cluster.client.get(node.url + "/api/v1/cluster", headers=basic(*ADMIN))
            if view.status_code == 200 and view.json()["Leader"] == node.node_id:
                found.append(i)
                return True
        return False

    wait_until(leader_agrees, "no leader elected")
    return found[0], [i for i in range(len(cluster.nodes)) if i != found[0]]


@pytest.mark.cluster
def test_the_old_constant_token_drives_no_relay(
    members: tuple[Cluster, list[RecordingProxy]],
) -> None:
    """A --dev cluster (no Raft password): the token of the old relay is a public constant.
    No node, leader or follower, accepts it."""
    cluster, _ = members
    client = cluster.client
    leader, followers = roles(cluster)
    setup_group(client, cluster.urls[leader], "dev", ["d1"])
    attack = batch(["dev", "d1", 100, None, None])
    for url in [cluster.urls[i] for i in (leader, *followers)]:
        answer = client.post(
            url + RELAY, content=attack, headers={"x-cfs-relay": old_relay_token(None)}
        )
        assert_refused(answer)
    assert primary_of(client, cluster.urls[0], "dev") is None


@pytest.mark.cluster
def test_relayed_ids_get_the_checks_of_direct_ones(
    members: tuple[Cluster, list[RecordingProxy]],
) -> None:
    """A signed relay batch carrying what the front door refuses (bad ids, scores, times) is
    answered 400 item by item, as the direct heartbeat is; nothing is registered."""
    cluster, _ = members
    client = cluster.client
    leader, (follower, _) = roles(cluster)
    setup_group(client, cluster.urls[leader], "ids", ["ok"])
    bidi, long_id = "s\u200f", "x" * 257
    direct = client.post(
        f"{cluster.urls[follower]}{GROUPS}/ids/clientsessions/s%E2%80%8F/heartbeat",
        json={"FailoverScore": 1},
        headers=basic(*ADAPTER),
    )
    assert_refused(direct, 400)
    bad: list[list[Any]] = [
        ["ids", bidi, 1, None, None],
        ["ids", long_id, 1, None, None],
        ["", "ok", 1, None, None],
        ["ids", "a/b", 1, None, None],
        [None, "ok", 1, None, None],
        ["ids", "ok", 101, None, None],
        ["ids", "ok", float("inf"), None, None],
        ["ids", "ok", True, None, None],
        ["ids", "ok", 1, "2024-01-01", None],
        ["ids", "ok", 1, None, -5],
        ["ids", "ok", 1],
        ["ids", "ok", 1, None, None, None],  # HeldRole without HeldEpoch
        ["ids", "ok", 1, None, None, "Boss", None],
        ["ids", "ok", 1, None, None, "Secondary", -1],
        ["ids", "ok", 1, None, None, "Secondary", True],
        "not a list",
    ]
    body = json.dumps([*bad, ["ids", "ok", 1, None, None]], allow_nan=True).encode()
    key = member_key(client, cluster.urls[leader])
    headers = {"x-cfs-member": signature(key, "POST", RELAY, body, cluster.nodes[leader].node_id)}
    answer = client.post(cluster.urls[leader] + RELAY, content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    results = answer.json()
    assert [r.get("status") for r in results[:-1]] == [400] * len(bad), results
    assert "ok" in results[-1], results[-1]
    sessions = client.get(
        f"{cluster.urls[leader]}{GROUPS}/ids/clientsessions", headers=basic(*ADMIN)
    )
    assert [s["Id"] for s in sessions.json()] == ["ok"]


@pytest.mark.cluster
def test_a_relayed_batch_carries_its_term_and_a_newer_term_is_refused(
    members: tuple[Cluster, list[RecordingProxy]],
) -> None:
    """A follower relays its Raft term inside the signed body, with HeldRole/HeldEpoch in each
    item; the leader answers a batch of its own term, refuses one of a newer term (it may be
    deposed without knowing) with 503, and a malformed batch with 400."""
    cluster, proxies = members
    client = cluster.client
    leader, (follower, _) = roles(cluster)
    setup_group(client, cluster.urls[leader], "terms", ["t"])
    seen_before = len(proxies[leader].received())
    direct = client.post(
        f"{cluster.urls[follower]}{GROUPS}/terms/clientsessions/t/heartbeat",
        json={"FailoverScore": 1, "HeldRole": "Secondary", "HeldEpoch": 0},
        headers=basic(*ADAPTER),
    )
    assert direct.status_code == 200, direct.text
    wire = proxies[leader].received()[seen_before:]
    assert b'"Term": ' in wire and b'"Heartbeats": [["terms", "t", 1.0, null, null, ' in wire

    term = client.get(cluster.urls[leader] + "/api/v1/cluster", headers=basic(*ADMIN))
    own_term = term.json()["Term"]
    key = member_key(client, cluster.urls[leader])
    leader_id = cluster.nodes[leader].node_id

    def relay(payload: Any) -> httpx.Response:
        body = json.dumps(payload).encode()
        headers = {"x-cfs-member": signature(key, "POST", RELAY, body, leader_id)}
        return client.post(cluster.urls[leader] + RELAY, content=body, headers=headers)

    item = ["terms", "t", 1, None, None, None, None]
    current = relay({"Term": own_term, "Heartbeats": [item]})
    assert current.status_code == 200 and "ok" in current.json()[0], current.text
    assert_refused(relay({"Term": own_term + 1, "Heartbeats": [item]}), 503)
    for malformed in (
        {"Heartbeats": [item]},
        {"Term": "1", "Heartbeats": [item]},
        {"Term": -1, "Heartbeats": [item]},
        {"Term": True, "Heartbeats": [item]},
        {"Term": own_term, "Heartbeats": "not a list"},
        "not a batch",
    ):
        assert_refused(relay(malformed), 400)


@pytest.mark.cluster
def test_the_rate_limit_holds_for_heartbeats_spread_over_followers(
    members: tuple[Cluster, list[RecordingProxy]],
) -> None:
    """One session sending 8 heartbeats to each follower stays under each follower's own
    bucket (10); the leader counts them all and refuses the excess with 429 + Retry-After."""
    cluster, _ = members
    client = cluster.client
    leader, followers = roles(cluster)
    setup_group(client, cluster.urls[leader], "rate", ["r"])
    answers = [
        client.post(
            f"{cluster.urls[i]}{GROUPS}/rate/clientsessions/r/heartbeat",
            json={"FailoverScore": 1},
            headers=basic(*ADAPTER),
        )
        for i in followers
        for _ in range(8)
    ]
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) <= 11, statuses  # the burst, and a token refilled meanwhile
    refused = [a for a in answers if a.status_code == 429]
    assert refused and all(int(a.headers["retry-after"]) >= 1 for a in refused)


@pytest.mark.cluster
def test_admin_requests_through_a_follower_carry_no_credentials(
    members: tuple[Cluster, list[RecordingProxy]],
) -> None:
    """The follower authenticates the administrator and forwards a signed identity: the leader
    answers as before (same status codes), and no Authorization header, nor the password,
    ever reaches it."""
    cluster, proxies = members
    client = cluster.client
    leader, (follower, _) = roles(cluster)
    leader_id = cluster.nodes[leader].node_id
    seen_before = len(proxies[leader].received())
    admin, url = basic(*ADMIN), cluster.urls[follower]
    view = client.get(url + "/api/v1/cluster", headers=admin)
    assert view.status_code == 200 and view.json()["MembersView"] == "leader", view.text
    kept = client.post(
        url + "/api/v1/cluster/transfer-leader", json={"To": leader_id}, headers=admin
    )
    assert kept.status_code == 200 and kept.json()["Action"] == "unchanged", kept.text
    missing = client.delete(url + "/api/v1/cluster/members/no-such-node", headers=admin)
    assert_refused(missing, 404)  # the leader's answer, passed back
    assert_refused(
        client.delete(url + "/api/v1/cluster/members/no-such-node", headers=basic(*ADAPTER)), 403
    )
    wire = proxies[leader].received()[seen_before:]
    assert b"authorization:" not in wire.lower()
    assert ADMIN[1].encode() not in wire
    assert admin["Authorization"].split()[1].encode() not in wire
    assert b"x-cfs-member:" in wire.lower()  # the forwards did pass the leader's proxy

    # The leader decides on the forwarded role: a member vouching for a `users` caller, or
    # for nobody, gets no administrator operation.
    key = member_key(client, cluster.urls[leader])
    target = "/api/v1/cluster/members/no-such-node"
    as_user = signature(key, "DELETE", target, b"", leader_id, (ADAPTER[0], "users"))
    assert_refused(
        client.delete(cluster.urls[leader] + target, headers={"x-cfs-member": as_user}), 403
    )
    nobody = signature(key, "DELETE", target, b"", leader_id)
    assert_refused(
        client.delete(cluster.urls[leader] + target, headers={"x-cfs-member": nobody}), 401
    )


@pytest.mark.cluster
def test_member_key_rotation_keeps_heartbeats_through_followers(
    members: tuple[Cluster, list[RecordingProxy]], capsys: pytest.CaptureFixture[str]
) -> None:
    """Two rotations (CLI through a follower) while heartbeats flow through both followers:
    every heartbeat is answered 200, every node signs with the new key, and a request signed
    with the key before the rotation still verifies during the overlap."""
    from cfs_cluster.cli.main import main

    cluster, _ = members
    client = cluster.client
    leader, followers = roles(cluster)
    sessions = [f"k{i}" for i in range(6)]
    for session in sessions:
        setup_group(client, cluster.urls[leader], f"rot-{session}", [session])
    before = member_key(client, cluster.urls[leader])
    stop = threading.Event()
    statuses: list[int] = []

    def beat() -> None:
        turn = 0
        with httpx.Client(timeout=10) as own:
            while not stop.is_set() and turn < 6 * 8:  # at most 8 per session: under the burst
                session = sessions[turn % len(sessions)]
                url = cluster.urls[followers[turn % 2]]
                answer = own.post(
                    f"{url}{GROUPS}/rot-{session}/clientsessions/{session}/heartbeat",
                    json={"FailoverScore": 1},
                    headers=basic(*ADAPTER),
                )
                statuses.append(answer.status_code)
                turn += 1
                time.sleep(0.02)

    worker = threading.Thread(target=beat)
    worker.start()
    creds = ["--url", cluster.urls[followers[0]], "--user", ADMIN[0], "--password", ADMIN[1]]
    try:
        for _ in range(2):
            assert main(["cluster", *creds, "rotate-member-key"]) == 0
            time.sleep(0.3)
    finally:
        stop.set()
        worker.join(timeout=30)
    assert "signs from now on" in capsys.readouterr().out
    assert statuses and set(statuses) == {200}, statuses
    after = member_key(client, cluster.urls[leader])
    assert after.kid != before.kid
    for url in cluster.urls:
        wait_until(
            lambda url=url: (
                client.get(url + "/api/v1/cluster", headers=basic(*ADMIN)).json()["MemberKey"]
                == after.kid
            ),
            "a node does not sign with the new member key",
        )
    old = signature(before, "GET", "/_cluster/ping", b"", cluster.nodes[leader].node_id)
    assert (
        client.get(
            cluster.urls[leader] + "/_cluster/ping", headers={"x-cfs-member": old}
        ).status_code
        == 200
    )


# --------------------------------------------------------------------------- certificates


def test_self_signed_certificates_are_leaves_and_old_ca_ones_are_replaced(tmp_path: Path) -> None:
    from cryptography import x509

    from cfs_cluster.security import tls
    from cfs_cluster.settings import SecuritySettings, Settings

    settings = Settings(
        node_id="n1",
        api_host="127.0.0.1",
        api_port=1,
        raft_address="127.0.0.1:2",
        peers=(),
        data_dir=tmp_path,
        dev=True,
        security=SecuritySettings(tls_self_signed=True),
    )
    pair = tls.certificate_files(settings)
    assert pair is not None
    cert = x509.load_pem_x509_certificate(pair[0].read_bytes())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign is False

    ca = PrivateCA("old release")
    pair[0].write_bytes(ca.pem)  # what an earlier release generated: CA:TRUE
    pair[1].write_bytes(ca.key_pem)
    tls.certificate_files(settings)
    renewed = x509.load_pem_x509_certificate(pair[0].read_bytes())
    assert renewed.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_members_pin_leaves_only_and_never_the_system_store(tmp_path: Path) -> None:
    """A published CA certificate is not pinned (it would vouch for whatever it signed), and
    nothing from the system trust store is trusted between members."""
    from cfs_cluster.security import tls

    ca = PrivateCA("plant")
    leaf_pem, _ = ca.leaf("n1")
    pinned = tls.member_trust_context((leaf_pem.decode(), ca.pem.decode()), None)
    assert pinned.cert_store_stats() == {"x509": 1, "crl": 0, "x509_ca": 0}  # the leaf alone
    with_ca = tls.member_trust_context((leaf_pem.decode(),), ca.write(tmp_path / "ca.pem"))
    assert with_ca.cert_store_stats() == {"x509": 1, "crl": 0, "x509_ca": 1}
    assert [c["subject"] for c in with_ca.get_ca_certs()] == [((("commonName", "plant"),),)]


class PrivateCA:
    """A plant's own CA, and leaf certificates it issues for 127.0.0.1."""

    def __init__(self, name: str) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.pem = cert.public_bytes(serialization.Encoding.PEM)
        self.key_pem = _key_pem(self._key)

    def write(self, path: Path) -> Path:
        path.write_bytes(self.pem)
        return path

    def leaf(self, common_name: str) -> tuple[bytes, bytes]:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def ca_cluster(tmp_path: Path, issuer: PrivateCA, peer_ca: Path | None) -> Cluster:
    """Three HTTPS nodes, each with its own leaf from ``issuer``; ``peer_ca`` as --peer-ca-file."""
    cluster = Cluster(
        tmp_path, size=3, extra_args=[] if peer_ca is None else ["--peer-ca-file", str(peer_ca)]
    )
    for node in cluster.nodes:
        cert, key = issuer.leaf(node.node_id)
        (tmp_path / f"{node.node_id}.crt").write_bytes(cert)
        (tmp_path / f"{node.node_id}.key").write_bytes(key)
        node.extra_args += [
            "--tls-cert",
            str(tmp_path / f"{node.node_id}.crt"),
            "--tls-key",
            str(tmp_path / f"{node.node_id}.key"),
        ]
        node.scheme = "https"
    cluster.client.close()
    cluster.client = httpx.Client(timeout=10, verify=False)
    return cluster


@pytest.mark.cluster
@pytest.mark.parametrize("trust", ["peer-ca-file", "pinned"])
def test_a_private_ca_cluster_relays_through_followers(
    tmp_path: Path, trust: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--tls-cert/--tls-key from a plant's own CA: with --peer-ca-file the members verify
    each other against that CA; without it they pin the published (CA-issued) leaves. Either
    way a heartbeat sent to a follower reaches the leader (200, not 503), and the CLI verifies
    the nodes with --cacert."""
    from cfs_cluster.cli.main import main

    plant = PrivateCA("plant CA")
    ca_file = plant.write(tmp_path / "plant-ca.pem")
    with ca_cluster(tmp_path, plant, ca_file if trust == "peer-ca-file" else None) as cluster:
        client = cluster.client
        leader, followers = roles(cluster)
        setup = {"Id": "tls", "FailoverTimeout": "00:00:10"}
        assert client.post(cluster.urls[leader] + GROUPS, json=setup).status_code in (200, 201)
        sessions = f"{GROUPS}/tls/clientsessions"
        assert client.post(cluster.urls[leader] + sessions, json={"Id": "s"}).status_code in (
            200,
            201,
        )
        for i in followers:
            beat = client.post(
                f"{cluster.urls[i]}{sessions}/s/heartbeat", json={"FailoverScore": 1}
            )
            assert beat.status_code == 200, beat.text
            assert client.get(cluster.urls[i] + "/readyz").status_code == 200

        url = cluster.urls[followers[0]]
        assert main(["cluster", "--url", url, "--cacert", str(ca_file), "status"]) == 0
        capsys.readouterr()
        assert main(["cluster", "--url", url, "status"]) == 1
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and "Traceback" not in error, error
        assert "--cacert FILE" in error and "--insecure" in error, error
        other = PrivateCA("someone else").write(tmp_path / "other.pem")
        assert main(["users", "--url", url, "--cacert", str(other), "list"]) == 1
        assert f"--cacert {other}" in capsys.readouterr().err


@pytest.mark.cluster
def test_followers_that_cannot_verify_the_leader_are_not_ready(tmp_path: Path) -> None:
    """Members given the wrong CA cannot relay: the followers' /readyz answers 503 with the
    reason (a load balancer takes them out), while the leader, which relays nothing, is ready."""
    plant, wrong = PrivateCA("plant CA"), PrivateCA("wrong CA")
    cluster = ca_cluster(tmp_path, plant, wrong.write(tmp_path / "wrong.pem"))
    try:
        for node in cluster.nodes:
            node.start()
        readiness: dict[int, httpx.Response] = {}

        def settled() -> bool:
            for i, node in enumerate(cluster.nodes):
                try:
                    readiness[i] = cluster.client.get(node.url + "/readyz", timeout=2)
                except httpx.HTTPError:
                    return False
            ready = [i for i, r in readiness.items() if r.status_code == 200]
            # Until the first member key has replicated, a follower is unready for that
            # reason; once it has one, the wrong CA is what keeps it out.
            relaying = [
                i for i, r in readiness.items() if "CERTIFICATE_VERIFY_FAILED" in r.json()["Reason"]
            ]
            return len(ready) == 1 and len(relaying) == 2

        wait_until(settled, f"readiness never settled: {[r.text for r in readiness.values()]}", 40)
        leader = next(i for i, r in readiness.items() if r.status_code == 200)
        for i, answer in readiness.items():
            if i != leader:
                assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
                assert "cannot relay to the leader" in answer.json()["Reason"], answer.text
    finally:
        cluster.close()


# --------------------------------------------------------------------------- MemberAuth alone


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _auth_pair() -> tuple[Any, Any, list[Any], Clock]:
    from cfs_cluster.engine import SigningKey
    from cfs_cluster.security.memberauth import MemberAuth

    clock = Clock()
    keys = [SigningKey("k1", "11" * 32, int(clock.now))]
    return MemberAuth(lambda: keys, "n1", clock), MemberAuth(lambda: keys, "n2", clock), keys, clock


def test_a_signature_vouches_for_the_caller_once() -> None:
    from cfs_cluster.errors import MemberAuthFailed
    from cfs_cluster.security.memberauth import Caller

    follower, leader, _, _ = _auth_pair()
    header = follower.sign(
        "POST", "/api/v1/cluster/members", b"{}", "n2", Caller("rööt", "administrators")
    )
    signed = leader.verify("POST", "/api/v1/cluster/members", b"{}", header.encode())
    assert signed.caller == Caller("rööt", "administrators")
    with pytest.raises(MemberAuthFailed, match="replay"):
        leader.verify("POST", "/api/v1/cluster/members", b"{}", header.encode())
    with pytest.raises(MemberAuthFailed, match="another member"):
        follower.verify("POST", "/api/v1/cluster/members", b"{}", header.encode())


@pytest.mark.parametrize(
    "header",
    [
        None,
        b"",
        b"v1." + b"a" * 2000,
        b"v2.k1.1.ab.bjI.e30.ab",
        b"v1.k1.12x.ab.bjI..ab",
        b"v1.k1.1.not-hex.bjI..ab",
        b"v1.k1.1.ab.bjI..AB",
        "v1.k1.1.ab.bjI..ä".encode(),
        b"v1.k1.1.ab.bjI.ab",
    ],
)
def test_malformed_member_headers_are_401_never_an_exception(header: bytes | None) -> None:
    from cfs_cluster.errors import MemberAuthFailed

    _, leader, _, _ = _auth_pair()
    with pytest.raises(MemberAuthFailed):
        leader.verify("GET", "/_cluster/ping", b"", header)


def test_a_retired_member_key_verifies_for_the_overlap_only() -> None:
    """A follower that has not applied a rotation yet still signs with the old key: the
    leader accepts it for OVERLAP seconds after the rotation, then no more."""
    from cfs_cluster.engine import SigningKey
    from cfs_cluster.errors import MemberAuthFailed
    from cfs_cluster.security.memberauth import OVERLAP, MemberAuth

    _, leader, keys, clock = _auth_pair()
    lagging = MemberAuth(lambda: [SigningKey("k1", "11" * 32, int(clock.now))], "n3", clock)
    keys[0].retired_at = int(clock.now)
    keys.append(SigningKey("k2", "22" * 32, int(clock.now)))
    clock.now += OVERLAP - 1
    leader.verify(
        "GET", "/_cluster/ping", b"", lagging.sign("GET", "/_cluster/ping", b"", "n2").encode()
    )
    clock.now += 2
    with pytest.raises(MemberAuthFailed, match="retired"):
        leader.verify(
            "GET", "/_cluster/ping", b"", lagging.sign("GET", "/_cluster/ping", b"", "n2").encode()
        )


def test_forgotten_nonces_never_reopen_a_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond MAX_NONCES the oldest nonces are dropped, and with them every timestamp up to
    theirs: a replay of a forgotten request is still refused."""
    from cfs_cluster.errors import MemberAuthFailed
    from cfs_cluster.security import memberauth

    monkeypatch.setattr(memberauth, "MAX_NONCES", 3)
    follower, leader, _, clock = _auth_pair()
    headers = []
    for _ in range(5):
        clock.now += 0.01
        headers.append(follower.sign("GET", "/_cluster/ping", b"", "n2"))
    for header in headers:
        leader.verify("GET", "/_cluster/ping", b"", header.encode())
    for header in headers:
        with pytest.raises(MemberAuthFailed, match="replay"):
            leader.verify("GET", "/_cluster/ping", b"", header.encode())
