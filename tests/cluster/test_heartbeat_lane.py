"""The heartbeat lane (api/fastlane.py, api/connection.py) against real `cfs serve` processes.

A heartbeat with a Content-Length is answered by the lane below ASGI; the same heartbeat with a
chunked body goes through uvicorn's request cycle and the front door. Both must give the same
answer for every input (status, the headers that matter, the body but its OperationId), keep
a pipeline's order, honour ``Connection: close`` and HTTP/1.0, count failed credentials toward
the back-off the same way, and answer through a follower as through the leader.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.clusterkit import Cluster
from support.nodes import ADAPTER, ADMIN, basic

G = "/api/v1/clientfailover/groups"
BEAT = f"{G}/g/clientsessions/s1/heartbeat"
pytestmark = pytest.mark.cluster


# --------------------------------------------------------------------------- raw HTTP


def request_bytes(
    target: str,
    body: bytes,
    headers: dict[str, str],
    chunked: bool = False,
    version: str = "1.1",
    close: bool = False,
) -> bytes:
    lines = [f"POST {target} HTTP/{version}", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if close:
        lines.append("Connection: close")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        payload = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + payload


class Answer:
    def __init__(self, status: int, headers: dict[str, list[str]], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def comparable(self) -> tuple[Any, ...]:
        """What must not differ between the lane and the front door."""
        shown = {
            name: values
            for name, values in self.headers.items()
            if name in ("content-type", "www-authenticate", "retry-after", "connection")
        }
        payload = json.loads(self.body) if self.body else None
        if isinstance(payload, dict):
            payload.pop("OperationId", None)
        return self.status, shown, payload


def read_answers(sock: socket.socket, count: int) -> tuple[list[Answer], bool]:
    """``count`` answers off ``sock`` (Content-Length framed), and whether it was closed after."""
    buffer, answers = b"", []
    while len(answers) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {len(answers)} answers: {buffer!r}"
            buffer += chunk
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, list[str]] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        if headers.get("transfer-encoding") == ["chunked"]:
            body, buffer = read_chunked(sock, buffer)
        else:
            length = int(headers["content-length"][0])
            buffer = fill(sock, buffer, length)
            body, buffer = buffer[:length], buffer[length:]
        answers.append(Answer(int(status_line.split()[1]), headers, body))
    sock.settimeout(0.5)
    try:
        closed = sock.recv(1) == b""
    except TimeoutError:
        closed = False
    return answers, closed


def fill(sock: socket.socket, buffer: bytes, size: int) -> bytes:
    while len(buffer) < size:
        chunk = sock.recv(65536)
        assert chunk, "closed inside a body"
        buffer += chunk
    return buffer


def read_chunked(sock: socket.socket, buffer: bytes) -> tuple[bytes, bytes]:
    body = b""
    while True:
        while b"\r\n" not in buffer:
            buffer = fill(sock, buffer, len(buffer) + 1)
        size_line, _, buffer = buffer.partition(b"\r\n")
        size = int(size_line, 16)
        buffer = fill(sock, buffer, size + 2)
        body, buffer = body + buffer[:size], buffer[size + 2 :]
        if size == 0:
            return body, buffer


def exchange(port: int, data: bytes, count: int = 1) -> tuple[list[Answer], bool]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        return read_answers(sock, count)


def one(port: int, data: bytes) -> Answer:
    return exchange(port, data)[0][0]


# --------------------------------------------------------------------------- cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three nodes, auth required, one group with two sessions both heard (so steady)."""
    base: Path = tmp_path_factory.mktemp("lane")
    env = {"CFS_BOOTSTRAP_ADMIN": f"{ADMIN[0]}:{ADMIN[1]}"}
    with Cluster(base, size=3, env=env, extra_args=["--auth", "required"]) as cluster:
        cluster.client.auth = httpx.BasicAuth(*ADMIN)  # the status polls of leader_index
        cluster.wait_ready()
        cluster.wait_authenticated()
        http, url = cluster.client, cluster.urls[cluster.leader_index()]
        admin = basic(*ADMIN)
        user = {"Name": ADAPTER[0], "Password": ADAPTER[1], "Role": "users"}
        assert http.post(f"{url}/api/v1/users", json=user, headers=admin).status_code == 201
        group = {"Id": "g", "FailoverTimeout": "00:05:00"}
        assert http.post(url + G, json=group, headers=admin).status_code == 201
        for session in ("s1", "s2"):
            response = http.post(f"{url}{G}/g/clientsessions", json={"Id": session}, headers=admin)
            assert response.status_code == 201
        for session in ("s1", "s2", "s1", "s2"):  # the grant, then steady answers
            beat = f"{url}{G}/g/clientsessions/{session}/heartbeat"
            assert http.post(beat, json={"FailoverScore": 1}, headers=basic(*ADAPTER)).is_success
        yield cluster


def ports(cluster: Cluster) -> tuple[int, list[int]]:
    leader = cluster.leader_index()
    others = [n.api_port for i, n in enumerate(cluster.nodes) if i != leader]
    return cluster.nodes[leader].api_port, others


ADAPTER_AUTH = {"Authorization": basic(*ADAPTER)["Authorization"]}
CASES: list[tuple[str, str, bytes, dict[str, str]]] = [
    ("steady heartbeat", BEAT, b'{"FailoverScore": 1}', ADAPTER_AUTH),
    ("casing and a trailing slash", BEAT.upper().replace("/G/", "/g/").replace("/S1/", "/s1/")
     + "/", b'{"failoverscore": 1}', ADAPTER_AUTH),
    ("an administrator", BEAT, b'{"FailoverScore": 1}', {"Authorization": basic(*ADMIN)["Authorization"]}),
    ("the old FailoverStatus name", BEAT, b'{"FailoverStatus": 1}', ADAPTER_AUTH),
    ("times in the body", BEAT, b'{"FailoverScore": 1, "LastDataProcessedTime":'
     b' "2026-12-01T10:00:00.0000000Z", "HeartbeatTime": "2026-12-01T10:00:00Z"}', ADAPTER_AUTH),
    ("a score out of range", BEAT, b'{"FailoverScore": 101}', ADAPTER_AUTH),
    ("a score of the wrong type", BEAT, b'{"FailoverScore": "high"}', ADAPTER_AUTH),
    ("no score", BEAT, b"{}", ADAPTER_AUTH),
    ("not JSON", BEAT, b"{FailoverScore: 1", ADAPTER_AUTH),
    ("a JSON array", BEAT, b"[1]", ADAPTER_AUTH),
    ("an empty body", BEAT, b"", ADAPTER_AUTH),
    ("deep nesting", BEAT, b"[" * 5000 + b"]" * 5000, ADAPTER_AUTH),
    ("a bad time", BEAT, b'{"FailoverScore": 1, "HeartbeatTime": "yesterday"}', ADAPTER_AUTH),
    ("an unknown group", f"{G}/nosuch/clientsessions/s1/heartbeat", b'{"FailoverScore": 1}',
     ADAPTER_AUTH),
    ("an unknown session", f"{G}/g/clientsessions/nosuch/heartbeat", b'{"FailoverScore": 1}',
     ADAPTER_AUTH),
    ("an id too long", f"{G}/{'x' * 300}/clientsessions/s1/heartbeat", b'{"FailoverScore": 1}',
     ADAPTER_AUTH),
    ("no credentials", BEAT, b'{"FailoverScore": 1}', {}),
    ("a malformed Basic header", BEAT, b'{"FailoverScore": 1}', {"Authorization": "Basic !!"}),
    ("a forged Bearer token", BEAT, b'{"FailoverScore": 1}', {"Authorization": "Bearer abc.def"}),
    ("an unknown scheme", BEAT, b'{"FailoverScore": 1}', {"Authorization": "Digest x"}),
]  # fmt: skip


@pytest.mark.parametrize("name,target,body,headers", CASES, ids=[c[0] for c in CASES])
def test_the_lane_answers_as_the_front_door(
    cluster: Cluster, name: str, target: str, body: bytes, headers: dict[str, str]
) -> None:
    leader, followers = ports(cluster)
    for port in (leader, *followers):
        lane = one(port, request_bytes(target, body, headers))
        front = one(port, request_bytes(target, body, headers, chunked=True))
        assert lane.comparable() == front.comparable(), (port, name)
        assert lane.status < 500, (name, lane.status, lane.body)
        if lane.status >= 400:
            assert set(json.loads(lane.body)) >= {"OperationId", "Error", "Reason"}


def test_a_pipeline_is_answered_in_order(cluster: Cluster) -> None:
    """Heartbeats on the lane and requests through ASGI, sent in one write, answered in the
    order sent: a heartbeat does not overtake the slower request before it."""
    leader, followers = ports(cluster)
    get = (
        f"GET {G}/g HTTP/1.1\r\nHost: x\r\nAuthorization: {ADAPTER_AUTH['Authorization']}\r\n\r\n"
    ).encode()
    good = request_bytes(BEAT, b'{"FailoverScore": 1}', ADAPTER_AUTH)
    bad = request_bytes(BEAT, b'{"FailoverScore": "x"}', ADAPTER_AUTH)
    chunked = request_bytes(f"{G}/g/clientsessions/s2/heartbeat", b'{"FailoverScore": 1}',
                            ADAPTER_AUTH, chunked=True)  # fmt: skip
    for port in (leader, *followers):
        answers, closed = exchange(port, get + good + bad + get + chunked + good, count=6)
        assert [a.status for a in answers] == [200, 200, 400, 200, 200, 200]
        assert json.loads(answers[0].body)["Id"] == "g" == json.loads(answers[3].body)["Id"]
        assert "Role" in json.loads(answers[1].body) and "Role" in json.loads(answers[5].body)
        assert not closed  # kept alive


def test_connection_close_and_http_1_0_end_the_connection(cluster: Cluster) -> None:
    leader, followers = ports(cluster)
    body = b'{"FailoverScore": 1}'
    for port in (leader, *followers):
        answers, closed = exchange(port, request_bytes(BEAT, body, ADAPTER_AUTH, close=True))
        assert answers[0].status == 200 and closed
        assert answers[0].headers.get("connection") == ["close"]
        answers, closed = exchange(port, request_bytes(BEAT, body, ADAPTER_AUTH, version="1.0"))
        assert answers[0].status == 200 and closed
        # uvicorn closes every HTTP/1.0 connection after its answer, keep-alive asked or not:
        # the lane does as the rest of the server.
        keep = dict(ADAPTER_AUTH, Connection="keep-alive")
        answers, closed = exchange(port, request_bytes(BEAT, body, keep, version="1.0"))
        assert answers[0].status == 200 and closed
        get = f"GET {G}/g HTTP/1.0\r\nConnection: keep-alive\r\n"
        get += f"Authorization: {ADAPTER_AUTH['Authorization']}\r\n\r\n"
        answers, closed = exchange(port, get.encode())
        assert answers[0].status == 200 and closed


def test_every_node_gives_the_same_role(cluster: Cluster) -> None:
    leader, followers = ports(cluster)
    for session in ("s1", "s2"):
        target = f"{G}/g/clientsessions/{session}/heartbeat"
        roles = {
            json.loads(
                one(port, request_bytes(target, b'{"FailoverScore": 1}', ADAPTER_AUTH)).body
            )["Role"]
            for port in (leader, *followers)
        }
        assert len(roles) == 1, (session, roles)


def test_a_client_gone_before_its_answer_leaves_the_node_serving(cluster: Cluster) -> None:
    """Heartbeats whose client hangs up at once (a first-time credential check, a relay in
    flight): the node neither crashes nor stops answering on its other connections."""
    leader, followers = ports(cluster)
    admin = {"Authorization": basic(*ADMIN)["Authorization"]}
    for port in (leader, *followers):
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(request_bytes(BEAT, b'{"FailoverScore": 1}', admin))
        assert one(port, request_bytes(BEAT, b'{"FailoverScore": 1}', ADAPTER_AUTH)).status == 200


def test_wrong_passwords_on_the_lane_count_toward_the_back_off(cluster: Cluster) -> None:
    """A guessed password is refused 401 until the account's back-off answers 429; the right
    password of another account is not held up by it."""
    leader, _ = ports(cluster)
    wrong = {"Authorization": basic(ADAPTER[0], "guess")["Authorization"]}
    statuses = []
    for _ in range(40):
        statuses.append(one(leader, request_bytes(BEAT, b'{"FailoverScore": 1}', wrong)).status)
        if statuses[-1] == 429:
            break
    assert statuses[0] == 401 and statuses[-1] == 429, statuses
    admin = {"Authorization": basic(*ADMIN)["Authorization"]}
    assert one(leader, request_bytes(BEAT, b'{"FailoverScore": 1}', admin)).status == 200
