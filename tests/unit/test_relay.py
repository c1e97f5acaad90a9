"""cluster/relay.py at its socket seam: the leader is an httpx.MockTransport that verifies the
member signature with the leader's own MemberAuth and answers as the real endpoint would; the
Raft side is a fake replicator (who leads, the published members)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from cfs_cluster import engine
from cfs_cluster.cluster.relay import Relay, encode_answer
from cfs_cluster.errors import BadRequest, MemberAuthFailed, NotFound, Unavailable
from cfs_cluster.protocol.heartbeat import PING_PATH, RELAY_PATH, HeartbeatAnswer, HeartbeatReport
from cfs_cluster.protocol.wire import ClientRole
from cfs_cluster.security.memberauth import MEMBER_HEADER, Caller, MemberAuth

KEY = engine.SigningKey("k1", "ab" * 32, 0)
LEADER = engine.Member("n2", "127.0.0.1:7002", "http://leader.test:5590")


class FakeReplicator:
    """What Relay reads of the Replicator: the leader's Raft address and the member table."""

    self_address = "127.0.0.1:7001"

    def __init__(self) -> None:
        self.leader: str | None = LEADER.raft
        self.state = engine.ClusterState()
        self.state.members = {"n1": engine.Member("n1", self.self_address, "http://n1.test")}
        self.state.members[LEADER.node_id] = LEADER

    def leader_address(self) -> str | None:
        return self.leader

    def term(self) -> int:
        return 1


Handler = Callable[[httpx.Request], httpx.Response]


class Leader:
    """The leader's side of the channel: verifies every request, records it, answers."""

    def __init__(self, answer: Handler) -> None:
        self.auth = MemberAuth(lambda: [KEY], LEADER.node_id)
        self.answer = answer
        self.requests: list[tuple[str, str, Any, Caller | None]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        target = request.url.raw_path.decode()
        header = request.headers.get(MEMBER_HEADER, "").encode()
        try:
            vouched = self.auth.verify(request.method, target, request.content, header)
        except MemberAuthFailed as exc:
            return httpx.Response(401, json={"reason": exc.reason})
        body = json.loads(request.content) if request.content else None
        if isinstance(body, dict) and "Heartbeats" in body:  # a relayed batch with its term
            body = body["Heartbeats"]
        self.requests.append((request.method, target, body, vouched.caller))
        return self.answer(request)


def relay_to(leader: Leader, replicator: FakeReplicator | None = None) -> Relay:
    relay = Relay(
        replicator or FakeReplicator(),  # type: ignore[arg-type]
        MemberAuth(lambda: [KEY], "n1"),
        linger=0.0,
        timeout=1.0,
    )
    relay._client = httpx.AsyncClient(transport=httpx.MockTransport(leader))
    return relay


def report(session: str) -> HeartbeatReport:
    return HeartbeatReport("g1", session, 1.0, None, None)


ANSWER = HeartbeatAnswer(ClientRole.Primary, 5, 2, 100, 200)


def answer_each(results: list[dict[str, Any]]) -> Handler:
    return lambda request: httpx.Response(200, json=results)


def test_heartbeats_of_one_moment_go_to_the_leader_as_one_signed_batch() -> None:
    results = [
        {"ok": encode_answer(ANSWER)},
        {"status": 404, "reason": "Session 's2' was not found.", "retry_after": 0},
        {"status": 400, "reason": "Score is out of range."},
    ]
    leader = Leader(answer_each(results))

    async def scenario() -> list[Any]:
        relay = relay_to(leader)
        try:
            beats = [relay.heartbeat(report(s)) for s in ("s1", "s2", "s3")]
            return await asyncio.gather(*beats, return_exceptions=True)
        finally:
            await relay.close()

    first, second, third = asyncio.run(scenario())
    assert first == ANSWER
    assert isinstance(second, NotFound) and "s2" in second.reason
    assert isinstance(third, BadRequest) and third.status == 400
    assert [(method, path, len(body)) for method, path, body, _ in leader.requests] == [
        ("POST", RELAY_PATH, 3)
    ]
    assert leader.requests[0][2][1][:2] == ["g1", "s2"]


def test_a_forwarded_request_carries_the_caller_signed_not_the_credentials() -> None:
    leader = Leader(lambda request: httpx.Response(200, json={"ok": True}))

    async def scenario() -> httpx.Response:
        relay = relay_to(leader)
        try:
            caller = Caller("alice", "administrators")
            return await relay.request_leader("GET", "/api/v1/cluster?stale=true", caller=caller)
        finally:
            await relay.close()

    response = asyncio.run(scenario())
    assert response.status_code == 200
    assert leader.requests == [
        ("GET", "/api/v1/cluster?stale=true", None, Caller("alice", "administrators"))
    ]


def test_a_refused_signature_makes_the_leader_unreachable_until_a_call_succeeds() -> None:
    refuse = [True]

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401 if refuse[0] else 200, json={})

    leader = Leader(answer)

    async def scenario() -> list[tuple[bool, str]]:
        relay = relay_to(leader)
        seen = [relay.leader_reachable()]
        try:
            await relay.probe()
            seen.append(relay.leader_reachable())
            refuse[0] = False
            await relay.probe()
            seen.append(relay.leader_reachable())
        finally:
            await relay.close()
        return seen

    unchecked, refused, ready = asyncio.run(scenario())
    assert unchecked[0] is False and "not checked yet" in unchecked[1]
    assert refused == (False, f"cannot relay to the leader at {LEADER.api_url}: "
                       f"the leader answered 401 to GET {PING_PATH}")  # fmt: skip
    assert ready == (True, "ready")


def test_no_known_leader_is_unavailable_without_a_request() -> None:
    leader = Leader(answer_each([]))
    replicator = FakeReplicator()
    replicator.leader = None

    async def scenario() -> None:
        relay = relay_to(leader, replicator)
        try:
            await relay.call_leader(RELAY_PATH, [])
        finally:
            await relay.close()

    with pytest.raises(Unavailable, match="No Raft leader"):
        asyncio.run(scenario())
    assert leader.requests == []


def test_a_leader_that_has_not_published_its_api_url_is_unavailable() -> None:
    leader = Leader(answer_each([]))
    replicator = FakeReplicator()
    del replicator.state.members[LEADER.node_id]

    async def scenario() -> None:
        relay = relay_to(leader, replicator)
        try:
            await relay.request_leader("GET", PING_PATH)
        finally:
            await relay.close()

    with pytest.raises(Unavailable, match="has not published its API address"):
        asyncio.run(scenario())


def test_an_answer_that_does_not_match_the_batch_fails_every_heartbeat_in_it() -> None:
    leader = Leader(answer_each([{"ok": encode_answer(ANSWER)}]))  # one answer for two

    async def scenario() -> list[Any]:
        relay = relay_to(leader)
        try:
            beats = [relay.heartbeat(report(s)) for s in ("s1", "s2")]
            return await asyncio.gather(*beats, return_exceptions=True)
        finally:
            await relay.close()

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, Unavailable) and "does not match" in o.reason for o in outcomes)
    assert len(leader.requests) == 2  # the one retry after a leader change was awaited
