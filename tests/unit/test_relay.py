"""cluster/relay.py and cluster/memberlink.py over real sockets: the leader is a small HTTP/1.1
server on 127.0.0.1 that verifies the member signature with the leader's own MemberAuth and
answers as the real endpoint would; the Raft side is a fake replicator (who leads, the
published members)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvloop

from cfs_cluster import engine
from cfs_cluster.cluster.memberlink import MemberLink
from cfs_cluster.cluster.relay import Relay, encode_answer
from cfs_cluster.errors import BadRequest, MemberAuthFailed, NotFound, Unavailable
from cfs_cluster.protocol.heartbeat import PING_PATH, RELAY_PATH, HeartbeatAnswer, HeartbeatReport
from cfs_cluster.protocol.wire import ClientRole
from cfs_cluster.security.memberauth import MEMBER_HEADER, Caller, MemberAuth

KEY = engine.SigningKey("k1", "ab" * 32, 0)
LEADER_ID, LEADER_RAFT = "n2", "127.0.0.1:7002"


class FakeReplicator:
    """What Relay reads of the Replicator: the leader's Raft address and the member table."""

    self_address = "127.0.0.1:7001"

    def __init__(self) -> None:
        self.leader: str | None = LEADER_RAFT
        self.state = engine.ClusterState()
        self.state.members = {"n1": engine.Member("n1", self.self_address, "http://n1.test")}
        self.state.members[LEADER_ID] = engine.Member(LEADER_ID, LEADER_RAFT, "http://unset")

    def leader_address(self) -> str | None:
        return self.leader

    def term(self) -> int:
        return 1


Handler = Callable[[httpx.Request], httpx.Response]


class Leader:
    """The leader's side of the channel, on a real socket: verifies every request, records
    it, answers (Content-Length framed; ``chunked`` answers in chunks; ``close_after``
    closes each connection after that many answers, as a server's keep-alive timeout does)."""

    def __init__(self, answer: Handler) -> None:
        self.auth = MemberAuth(lambda: [KEY], LEADER_ID)
        self.answer = answer
        self.requests: list[tuple[str, str, Any, Caller | None]] = []
        self.connections = 0
        self.chunked = False
        self.close_after: int | None = None
        self.drop_after: int | None = None  # then read one more request and close unanswered
        self.url = ""
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        answered = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *fields = head.decode("latin-1").split("\r\n")[:-2]
                method, target, _ = line.split(" ")
                headers = [tuple(f.split(": ", 1)) for f in fields]
                length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
                body = await reader.readexactly(length)
                if self.drop_after is not None and answered >= self.drop_after:
                    break  # as a server closing an idle connection just as a request arrives
                request = httpx.Request(method, self.url + target, headers=headers, content=body)
                writer.write(self._encode(self.handle(request)))
                answered += 1
                if self.close_after is not None and answered >= self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _encode(self, response: httpx.Response) -> bytes:
        body = response.content
        head = f"HTTP/1.1 {response.status_code} X\r\ncontent-type: application/json\r\n"
        if self.chunked and body:
            half = len(body) // 2
            parts = [body[:half], body[half:]]
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in parts if c)
            return (head + "transfer-encoding: chunked\r\n\r\n").encode() + chunks + b"0\r\n\r\n"
        return (head + f"content-length: {len(body)}\r\n\r\n").encode() + body

    def handle(self, request: httpx.Request) -> httpx.Response:
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


@asynccontextmanager
async def relaying(
    leader: Leader, replicator: FakeReplicator | None = None
) -> AsyncIterator[Relay]:
    replicator = replicator or FakeReplicator()
    url = await leader.start()
    if LEADER_ID in replicator.state.members:
        replicator.state.members[LEADER_ID] = engine.Member(LEADER_ID, LEADER_RAFT, url)
    relay = Relay(
        replicator,  # type: ignore[arg-type]
        MemberAuth(lambda: [KEY], "n1"),
        linger=0.0,
        timeout=1.0,
    )
    try:
        yield relay
    finally:
        await relay.close()
        await leader.stop()


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
        async with relaying(leader) as relay:
            beats = [relay.heartbeat(report(s)) for s in ("s1", "s2", "s3")]
            return await asyncio.gather(*beats, return_exceptions=True)

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
        async with relaying(leader) as relay:
            caller = Caller("alice", "administrators")
            return await relay.request_leader("GET", "/api/v1/cluster?stale=true", caller=caller)

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
        async with relaying(leader) as relay:
            seen = [relay.leader_reachable()]
            await relay.probe()
            seen.append(relay.leader_reachable())
            refuse[0] = False
            await relay.probe()
            seen.append(relay.leader_reachable())
        return seen

    unchecked, refused, ready = asyncio.run(scenario())
    assert unchecked[0] is False and "not checked yet" in unchecked[1]
    assert refused == (False, f"cannot relay to the leader at {leader.url}: "
                       f"the leader answered 401 to GET {PING_PATH}")  # fmt: skip
    assert ready == (True, "ready")


def test_no_known_leader_is_unavailable_without_a_request() -> None:
    leader = Leader(answer_each([]))
    replicator = FakeReplicator()
    replicator.leader = None

    async def scenario() -> None:
        async with relaying(leader, replicator) as relay:
            await relay.call_leader(RELAY_PATH, [])

    with pytest.raises(Unavailable, match="No Raft leader"):
        asyncio.run(scenario())
    assert leader.requests == []


def test_a_leader_that_has_not_published_its_api_url_is_unavailable() -> None:
    leader = Leader(answer_each([]))
    replicator = FakeReplicator()
    del replicator.state.members[LEADER_ID]

    async def scenario() -> None:
        async with relaying(leader, replicator) as relay:
            await relay.request_leader("GET", PING_PATH)

    with pytest.raises(Unavailable, match="has not published its API address"):
        asyncio.run(scenario())


def test_an_answer_that_does_not_match_the_batch_fails_every_heartbeat_in_it() -> None:
    leader = Leader(answer_each([{"ok": encode_answer(ANSWER)}]))  # one answer for two

    async def scenario() -> list[Any]:
        async with relaying(leader) as relay:
            beats = [relay.heartbeat(report(s)) for s in ("s1", "s2")]
            return await asyncio.gather(*beats, return_exceptions=True)

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, Unavailable) and "does not match" in o.reason for o in outcomes)
    assert len(leader.requests) == 2  # the one retry after a leader change was awaited


# --------------------------------------------------------------------------- the member link

# The nodes run on uvloop (uvicorn's default with it installed), whose transports are not
# asyncio's classes: every link test runs on both loops.
LOOPS = pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])


def beat_answers(request: httpx.Request) -> httpx.Response:
    batch = json.loads(request.content)["Heartbeats"]
    return httpx.Response(200, json=[{"ok": encode_answer(ANSWER)} for _ in batch])


@LOOPS
def test_relay_batches_share_one_kept_alive_connection(run: Callable[[Any], Any]) -> None:
    leader = Leader(beat_answers)

    async def scenario() -> list[HeartbeatAnswer]:
        async with relaying(leader) as relay:
            return [await relay.heartbeat(report(f"s{i}")) for i in range(5)]

    assert run(scenario()) == [ANSWER] * 5
    assert len(leader.requests) == 5 and leader.connections == 1


@LOOPS
def test_a_connection_the_leader_closed_is_replaced_without_an_error(
    run: Callable[[Any], Any],
) -> None:
    """The leader closes every connection after one answer (its keep-alive timeout, a
    restart): each next batch finds its idle connection closed and goes on a new one."""
    leader = Leader(beat_answers)
    leader.close_after = 1

    async def scenario() -> list[HeartbeatAnswer]:
        async with relaying(leader) as relay:
            answers = []
            for i in range(3):
                answers.append(await relay.heartbeat(report(f"s{i}")))
                await asyncio.sleep(0.05)  # the close reaches this side (no event to await)
            return answers

    assert run(scenario()) == [ANSWER] * 3
    assert leader.connections == 3


@LOOPS
def test_a_reused_connection_closed_before_its_answer_is_retried_on_a_new_one(
    run: Callable[[Any], Any],
) -> None:
    """The leader takes the request on a kept-alive connection and closes it unanswered (its
    idle timeout racing the request): the link sends it again on a fresh connection, once."""
    leader = Leader(lambda request: httpx.Response(200, json={"ok": True}))
    leader.drop_after = 1

    async def scenario() -> list[tuple[int, bytes]]:
        url = await leader.start()
        link = MemberLink(url, None, connect_timeout=1.0)
        signer = MemberAuth(lambda: [KEY], "n1")

        async def post() -> tuple[int, bytes]:
            signed = signer.sign("POST", "/_cluster/x", b"{}", LEADER_ID, None)
            return await link.post("/_cluster/x", b"{}", [(MEMBER_HEADER, signed)], 1.0)

        try:
            return [await post() for _ in range(2)]
        finally:
            link.close()
            await leader.stop()

    answers = run(scenario())
    assert [status for status, _ in answers] == [200, 200]
    assert leader.connections == 2


@LOOPS
def test_a_chunked_answer_is_read_whole(run: Callable[[Any], Any]) -> None:
    leader = Leader(beat_answers)
    leader.chunked = True

    async def scenario() -> list[Any]:
        async with relaying(leader) as relay:
            beats = [relay.heartbeat(report(s)) for s in ("s1", "s2", "s3")]
            return await asyncio.gather(*beats)

    assert run(scenario()) == [ANSWER] * 3


@LOOPS
def test_a_leader_that_does_not_answer_in_time_is_unavailable(run: Callable[[Any], Any]) -> None:
    def never(request: httpx.Request) -> httpx.Response:
        raise AssertionError("unreachable")

    async def scenario() -> tuple[float, BaseException | None]:
        held: list[asyncio.StreamWriter] = []
        server = await asyncio.start_server(lambda r, w: held.append(w), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        replicator = FakeReplicator()
        leader = Leader(never)
        async with relaying(leader, replicator) as relay:
            replicator.state.members[LEADER_ID] = engine.Member(
                LEADER_ID, LEADER_RAFT, f"http://127.0.0.1:{port}"
            )
            started = asyncio.get_running_loop().time()
            try:
                await relay.call_leader(RELAY_PATH, {"Term": 1, "Heartbeats": []})
            except Unavailable as exc:
                return asyncio.get_running_loop().time() - started, exc
            finally:
                server.close()
                for writer in held:  # it never read nor answered
                    writer.close()
        return 0.0, None

    waited, error = run(scenario())
    assert isinstance(error, Unavailable) and "no answer in time" in error.reason
    assert 0.9 <= waited < 3.0  # the relay's timeout (1 s), not for ever


@LOOPS
def test_a_refused_connection_is_noted_with_its_reason(run: Callable[[Any], Any]) -> None:
    async def scenario() -> tuple[BaseException | None, tuple[bool, str]]:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()  # nothing listens on the port now
        replicator = FakeReplicator()
        async with relaying(Leader(beat_answers), replicator) as relay:
            url = f"http://127.0.0.1:{port}"
            replicator.state.members[LEADER_ID] = engine.Member(LEADER_ID, LEADER_RAFT, url)
            try:
                await relay.call_leader(RELAY_PATH, {"Term": 1, "Heartbeats": []})
            except Unavailable as exc:
                return exc, relay.leader_reachable()
        return None, (True, "")

    error, (reachable, why) = run(scenario())
    assert isinstance(error, Unavailable) and "Could not reach the leader" in error.reason
    assert reachable is False and "cannot relay to the leader" in why
