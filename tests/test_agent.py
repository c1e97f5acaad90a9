"""The agent library (cfs_cluster.agent) and the role long-poll it uses.

Pure parts (HotBuffer, grant bookkeeping, answer parsing, settings, the token client and the
endpoint pool over httpx.MockTransport) are tested without a network. The agent itself runs
against real 3-node clusters (tests/support/clusterkit.py): registration, promotion notice by long-poll,
self-demotion when a grant lapses, re-registration after a 404, and a node killed mid-run.
Waits are on agent events (role-change callbacks, wait_for_role) with generous bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.clusterkit import Cluster

from cfs_cluster.agent import AgentSettings, ClientRole, FailoverAgent, HotBuffer, RoleChange
from cfs_cluster.agent.grant import Grant, RoleAnswer, next_role, parse_role_answer
from cfs_cluster.agent.tokens import BearerAuth, TokenProvider, discovery_url
from cfs_cluster.agent.transport import (
    EndpointPool,
    EndpointUnavailable,
    RateLimited,
    Unreachable,
)

API = "/api/v1/clientfailover"
PRIMARY, SECONDARY, PENDING = ClientRole.Primary, ClientRole.Secondary, ClientRole.PendingPrimary


# =========================================================================== pure parts


class TestHotBuffer:
    """The hot-mode buffer keeps what the primary may not have sent (spec §4.2, §5.5)."""

    def test_trim_keeps_a_margin_before_the_data_time(self) -> None:
        buffer: HotBuffer[int] = HotBuffer(margin=5.0)
        for seq in range(20):
            buffer.add(100.0 + seq, seq)
        assert buffer.trim(110.0) == 6  # drops 100..105: stamped at or before 110 - 5
        assert [seq for _, seq in buffer] == list(range(6, 20))

    def test_unknown_data_time_trims_nothing(self) -> None:
        buffer: HotBuffer[str] = HotBuffer(margin=1.0)
        buffer.add(1.0, "a")
        assert buffer.trim(None) == 0
        assert buffer.trim(0.0) == 0
        assert len(buffer) == 1

    def test_promote_flushes_everything_after_the_adjusted_time_and_empties(self) -> None:
        buffer: HotBuffer[int] = HotBuffer(margin=2.0)
        for seq in range(10):
            buffer.add(float(seq), seq)
        flushed = buffer.promote(6.0)
        assert [seq for _, seq in flushed] == [5, 6, 7, 8, 9]  # 6 - 2 = 4 is the horizon
        assert len(buffer) == 0

    def test_bounded_buffer_drops_the_oldest(self) -> None:
        buffer: HotBuffer[int] = HotBuffer(margin=0.0, max_items=3)
        for seq in range(5):
            buffer.add(float(seq), seq)
        assert [seq for _, seq in buffer] == [2, 3, 4]

    def test_negative_margin_is_refused(self) -> None:
        with pytest.raises(ValueError):
            HotBuffer(margin=-1.0)


class TestGrant:
    """ValidFor bookkeeping: a grant counts from the send time (P1 from the adapter's side)."""

    def test_primary_grant_is_valid_for_valid_for_after_sending(self) -> None:
        answer = RoleAnswer(PRIMARY, 0, 4, 1.5)
        grant = Grant.from_answer(answer, sent_at=10.0, default_validity=60.0)
        assert grant.epoch == 4
        assert grant.valid(11.49) and not grant.valid(11.5)
        assert grant.remaining(11.0) == pytest.approx(0.5)

    def test_missing_valid_for_trusts_the_failover_timeout(self) -> None:
        grant = Grant.from_answer(RoleAnswer(PRIMARY, 0, None, None), 0.0, default_validity=6.0)
        assert grant.valid(5.9) and not grant.valid(6.0)

    def test_secondary_answer_grants_nothing(self) -> None:
        grant = Grant.from_answer(RoleAnswer(SECONDARY, 0, 3, None), 0.0, 60.0)
        assert grant.epoch == 3 and not grant.valid(0.0)

    @pytest.mark.parametrize(
        ("current", "answer", "valid", "expected"),
        [
            pytest.param(SECONDARY, PRIMARY, True, PRIMARY, id="grant"),
            pytest.param(SECONDARY, PRIMARY, False, SECONDARY, id="grant-arrived-lapsed"),
            pytest.param(PRIMARY, SECONDARY, False, SECONDARY, id="demoted"),
            pytest.param(SECONDARY, PENDING, False, SECONDARY, id="pending-keeps-role"),
            pytest.param(PRIMARY, PENDING, False, SECONDARY, id="pending-is-not-primary"),
        ],
    )
    def test_next_role(
        self, current: ClientRole, answer: ClientRole, valid: bool, expected: ClientRole
    ) -> None:
        assert next_role(current, answer, valid) == expected


def test_a_long_poll_answer_older_than_the_last_heartbeat_is_ignored() -> None:
    """A poll answered by a lagging node (or just before a grant) must not demote the primary
    the last heartbeat made: its epoch is older, so it is old news."""
    settings = AgentSettings(endpoints=("http://127.0.0.1:9" + API,), group_id="g")
    agent = FailoverAgent(settings)
    assert not agent._predates_heartbeat(RoleAnswer(SECONDARY, 0, 4, None))  # nothing known yet
    agent._answered = (PRIMARY, 5)
    assert agent._predates_heartbeat(RoleAnswer(SECONDARY, 0, 4, None))
    assert not agent._predates_heartbeat(RoleAnswer(SECONDARY, 0, 5, None))  # same grant: news
    assert not agent._predates_heartbeat(RoleAnswer(SECONDARY, 0, None, None))  # plain CFS


def test_agent_reports_what_it_holds_and_never_acts_on_a_dropped_epoch() -> None:
    """HeldRole/HeldEpoch (docs/safety.md): Secondary at epoch E promises no grant <= E is acted
    on, so a late Primary answer of a dropped epoch leaves the agent Secondary."""
    settings = AgentSettings(endpoints=("http://127.0.0.1:9" + API,), group_id="g")
    agent = FailoverAgent(settings)

    async def body() -> list[tuple[ClientRole, int | None]]:
        held = [agent._held()]
        agent._apply(RoleAnswer(PRIMARY, 0, 3, 10.0), asyncio.get_running_loop().time())
        held.append(agent._held())
        agent._apply(RoleAnswer(SECONDARY, 0, 3, None), asyncio.get_running_loop().time())
        held.append(agent._held())
        agent._apply(RoleAnswer(PRIMARY, 0, 3, 10.0), asyncio.get_running_loop().time())
        held.append(agent._held())  # a late answer of epoch 3: not acted on
        agent._apply(RoleAnswer(PRIMARY, 0, 4, 10.0), asyncio.get_running_loop().time())
        held.append(agent._held())
        agent._cancel_lapse()
        return held

    assert asyncio.run(body()) == [
        (SECONDARY, None),
        (PRIMARY, 3),
        (SECONDARY, 3),
        (SECONDARY, 3),
        (PRIMARY, 4),
    ]


@pytest.mark.parametrize(
    ("timeout", "primary_next", "secondary_next"),
    [(2.0, 0.5, 1.0), (2.5, 1.0, 1.25), (3.0, 1.5, 1.5), (60.0, 30.0, 30.0)],
)
def test_a_primary_renews_early_enough_to_ride_out_a_leader_change(
    timeout: float, primary_next: float, secondary_next: float
) -> None:
    """docs/safety.md, 'A leader change costs our Primary no grant': a Primary's next heartbeat
    leaves LEADER_CHANGE_RESERVE (1.5 s) of its grant, never sooner than T/4; a failed round is
    retried after 0.2 s while it is Primary (not after a 429), after Retry-After otherwise."""
    settings = AgentSettings(
        endpoints=("http://127.0.0.1:9" + API,), group_id="g", failover_timeout=timeout
    )
    agent = FailoverAgent(settings)
    unavailable = EndpointUnavailable("503", status=503, retry_after=1.0)

    async def body() -> tuple[float, float, float, float, float]:
        secondary = (agent._next_heartbeat(), agent._retry_delay(unavailable))
        now = asyncio.get_running_loop().time()
        agent._apply(RoleAnswer(PRIMARY, 0, 1, 0.999 * timeout), now)
        primary = agent._next_heartbeat()
        retry = agent._retry_delay(unavailable)
        limited = agent._retry_delay(RateLimited("429", status=429, retry_after=1.0))
        agent._cancel_lapse()
        return (*secondary, primary, retry, limited)

    secondary, secondary_retry, primary, retry, limited = asyncio.run(body())
    assert secondary == secondary_next
    assert secondary_retry == min(1.0, timeout / 2)
    assert primary == pytest.approx(primary_next, abs=0.01)
    assert retry == 0.2
    assert limited == min(1.0, timeout / 2)


class TestParseRoleAnswer:
    """Answers are read leniently, as the adapter reads them (spec §3.4)."""

    def test_our_answer(self) -> None:
        body = {
            "Role": 1,
            "LastDataProcessedTime": "2026-11-23T10:00:00.5000000Z",
            "Epoch": 7,
            "ValidFor": "00:00:59.9400000",
        }
        answer = parse_role_answer(body)
        assert answer.role == PRIMARY and answer.epoch == 7
        assert answer.valid_for == pytest.approx(59.94)
        assert answer.last_data_processed > 0

    def test_plain_cfs_answer_with_names_and_min_value(self) -> None:
        answer = parse_role_answer(
            {"role": "secondary", "lastDataProcessedTime": "0001-01-01T00:00:00"}
        )
        assert answer == RoleAnswer(SECONDARY, 0, None, None)

    @pytest.mark.parametrize("body", [[], {"Role": 9}, {"Role": None}, {"Role": 1, "ValidFor": 5j}])
    def test_garbage_is_a_value_error(self, body: Any) -> None:
        with pytest.raises(ValueError):
            parse_role_answer(body)


class TestSettings:
    @pytest.mark.parametrize(
        "kwargs",
        [
            pytest.param({"endpoints": ()}, id="no-endpoint"),
            pytest.param({"endpoints": ("ftp://x/api",)}, id="not-http"),
            pytest.param({"failover_timeout": 0}, id="timeout"),
            pytest.param({"mode": "Lukewarm"}, id="mode"),
            pytest.param({"username": "u"}, id="user-without-password"),
            pytest.param({"client_id": "c"}, id="client-without-secret"),
            pytest.param(
                {"username": "u", "password": "p", "client_id": "c", "client_secret": "s"},
                id="two-credentials",
            ),
        ],
    )
    def test_invalid_settings_are_refused(self, kwargs: dict[str, Any]) -> None:
        base: dict[str, Any] = {"endpoints": ("http://127.0.0.1:5590" + API,), "group_id": "g"}
        with pytest.raises(ValueError):
            AgentSettings(**{**base, **kwargs})

    def test_a_lone_endpoint_string_is_one_endpoint(self) -> None:
        settings = AgentSettings("http://h:5590" + API, "g")  # type: ignore[arg-type]
        assert settings.endpoints == ("http://h:5590" + API,)


class TestTokens:
    """OAuth2 client credentials (spec §8.3), against a mocked identity server."""

    def test_discovers_the_token_endpoint_then_caches_and_refreshes(self) -> None:
        seen: list[str] = []
        now = [0.0]

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(f"{request.method} {request.url.path}")
            if request.url.path.endswith("openid-configuration"):
                return httpx.Response(200, json={"token_endpoint": "https://h:5590/identity/token"})
            form = dict(x.split("=") for x in request.content.decode().split("&"))
            assert form == {
                "grant_type": "client_credentials",
                "client_id": "c",
                "client_secret": "s",
            }
            return httpx.Response(200, json={"access_token": f"tok{len(seen)}", "expires_in": 100})

        async def body() -> list[str]:
            async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
                provider = TokenProvider(
                    client, "c", "s", None, "https://h:5590" + API, lambda: now[0]
                )
                first = await provider.token()
                again = await provider.token()  # cached
                now[0] = 71.0  # within 30 s of expiry
                refreshed = await provider.token()
                return [first, again, refreshed]

        assert asyncio.run(body()) == ["tok2", "tok2", "tok3"]
        assert seen[0] == "GET /identity/.well-known/openid-configuration"
        assert seen.count("GET /identity/.well-known/openid-configuration") == 1

    def test_bearer_auth_refreshes_once_after_a_401(self) -> None:
        tokens = iter(["old", "new"])

        def handler(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/token":
                return httpx.Response(200, json={"access_token": next(tokens), "expires_in": 3600})
            if request.headers["authorization"] == "Bearer new":
                return httpx.Response(200, json={"ok": True})
            return httpx.Response(401)

        async def body() -> int:
            async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
                provider = TokenProvider(client, "c", "s", "https://h/token", "https://h" + API)
                client.auth = BearerAuth(provider)
                return (await client.get("https://h/api/v1/clientfailover")).status_code

        assert asyncio.run(body()) == 200

    def test_discovery_url_uses_the_endpoint_host(self) -> None:
        url = discovery_url("https://lb.example:5590/api/v1/clientfailover")
        assert url == "https://lb.example:5590/identity/.well-known/openid-configuration"


class TestEndpointPool:
    """Requests move on to the next node after a connection error or a 503."""

    def _pool(self, handler: Any) -> tuple[EndpointPool, httpx.AsyncClient]:
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        roots = ("http://a/api", "http://b/api", "http://c/api")
        return EndpointPool(roots, client), client

    def test_rotates_past_dead_and_unavailable_nodes_and_sticks(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            if request.url.host == "a":
                raise httpx.ConnectError("refused")
            if request.url.host == "b":
                return httpx.Response(503, headers={"Retry-After": "1"})
            return httpx.Response(200, json={})

        async def body() -> tuple[str, str]:
            pool, client = self._pool(handler)
            async with client:
                await pool.request("GET", "groups")
                first = pool.current
                await pool.request("GET", "groups")
                return first, pool.current

        assert asyncio.run(body()) == ("http://c/api/", "http://c/api/")

    def test_all_unavailable_carries_retry_after_and_all_dead_is_unreachable(self) -> None:
        async def body(status: int | None) -> Exception:
            def handler(request: httpx.Request) -> httpx.Response:
                if status is None:
                    raise httpx.ConnectError("refused")
                return httpx.Response(status, headers={"Retry-After": "2"})

            pool, client = self._pool(handler)
            async with client:
                try:
                    await pool.request("POST", "x")
                except Exception as exc:
                    return exc
            raise AssertionError("no error")

        unavailable = asyncio.run(body(503))
        assert isinstance(unavailable, EndpointUnavailable) and unavailable.retry_after == 2.0
        assert isinstance(asyncio.run(body(None)), Unreachable)


# =========================================================================== live cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("agent-cluster")) as running:
        yield running


def _endpoints(cluster: Cluster, first: int = 0) -> tuple[str, ...]:
    urls = [u + API for u in cluster.urls]
    return tuple(urls[first:] + urls[:first])


class Recorder:
    """Role changes of one agent, with monotonic times, awaitable one by one."""

    def __init__(self) -> None:
        self.changes: list[tuple[float, RoleChange]] = []
        self.queue: asyncio.Queue[tuple[float, RoleChange]] = asyncio.Queue()

    def __call__(self, change: RoleChange) -> None:
        item = (time.monotonic(), change)
        self.changes.append(item)
        self.queue.put_nowait(item)

    async def next(self, timeout: float) -> tuple[float, RoleChange]:
        async with asyncio.timeout(timeout):
            return await self.queue.get()


def _agent(
    cluster: Cluster, group: str, session: str, timeout: float, first: int = 0
) -> tuple[FailoverAgent, Recorder]:
    recorder = Recorder()
    settings = AgentSettings(
        endpoints=_endpoints(cluster, first),
        group_id=group,
        session_id=session,
        failover_timeout=timeout,
        request_timeout=2.0,
    )
    return FailoverAgent(settings, on_role_change=recorder), recorder


@pytest.mark.cluster
def test_agent_registers_heartbeats_reports_data_time_and_unregisters(cluster: Cluster) -> None:
    async def body() -> None:
        a, _ = _agent(cluster, "reg", "a", 4.0)
        b, _ = _agent(cluster, "reg", "b", 4.0, first=1)
        await a.start()
        await b.start()
        assert a.state == b.state == "Running"
        assert a.role == PRIMARY and b.role == SECONDARY
        assert a.epoch == b.epoch and a.epoch is not None
        when = dt.datetime(2026, 11, 23, 10, 0, 0, tzinfo=dt.UTC)
        a.report_data_processed(when)
        a._poke.set()  # heartbeat now rather than in T/2 (the data time rides on it)
        await a._cycle_done.wait()
        b._poke.set()
        await b._cycle_done.wait()
        assert b.server_last_data_processed == when
        sessions = cluster.client.get(cluster.urls[2] + f"{API}/groups/reg/clientsessions").json()
        assert {s["Id"] for s in sessions} == {"a", "b"}
        await a.stop()
        await b.stop()
        assert a.state == "Stopped" and a.role == SECONDARY

    asyncio.run(body())
    sessions = cluster.client.get(cluster.urls[0] + f"{API}/groups/reg/clientsessions").json()
    assert sessions == []


@pytest.mark.cluster
def test_group_conflict_adopts_the_servers_timeout(cluster: Cluster) -> None:
    url = cluster.urls[0] + f"{API}/groups"
    assert cluster.client.post(url, json={"Id": "adopt", "FailoverTimeout": "00:00:03"}).is_success

    async def body() -> float:
        agent, _ = _agent(cluster, "adopt", "a", 8.0)
        await agent.start()
        try:
            return agent.failover_timeout
        finally:
            await agent.stop()

    assert asyncio.run(body()) == 3.0


@pytest.mark.cluster
def test_promotion_notice_arrives_by_long_poll_not_at_the_next_heartbeat(cluster: Cluster) -> None:
    """T = 20 s: heartbeats every 10 s, so a promotion seen within 2 s came by the long-poll
    (the primary resigned with an acknowledgement, so no grant has to lapse first)."""
    latencies: list[float] = []

    async def trial(n: int) -> None:
        group = f"notice{n}"
        a, _ = _agent(cluster, group, "a", 20.0, first=n % 3)
        b, b_changes = _agent(cluster, group, "b", 20.0, first=(n + 1) % 3)
        await a.start()
        await b.start()
        assert a.role == PRIMARY and b.role == SECONDARY
        # A clean stop: the agent drops its grant, says so (HeldRole) and deletes its session.
        # An operator's DELETE of a crashed primary would instead wait for its grant to lapse
        # (docs/safety.md), which tests/cluster/test_handover.py covers.
        stopping = time.monotonic()
        await a.stop()
        deleted = stopping
        at, change = await b_changes.next(timeout=5.0)
        assert change.new == PRIMARY, change
        latencies.append(at - deleted)
        await b.stop()

    async def body() -> None:
        for n in range(5):
            await trial(n)

    asyncio.run(body())
    print(
        f"promotion notice after the primary resigned: median {statistics.median(latencies) * 1000:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms over {len(latencies)} trials"
    )
    assert max(latencies) < 2.0, latencies  # the next timer heartbeat is up to 10 s away


class Proxy:
    """A TCP relay to one node that the test can cut, making the cluster unreachable."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        self._writers += [writer, up_writer]
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest.mark.cluster
def test_primary_demotes_itself_when_its_grant_lapses(cluster: Cluster) -> None:
    """Cut off from every node, the primary stops acting as one before anyone else is promoted."""

    async def body() -> tuple[float, float, float, RoleChange]:
        proxy = Proxy(cluster.nodes[0].api_port)
        port = await proxy.start()
        settings = AgentSettings(
            endpoints=(f"http://127.0.0.1:{port}{API}",),
            group_id="lapse",
            session_id="a",
            failover_timeout=2.0,
            request_timeout=1.0,
        )
        a_changes = Recorder()
        a = FailoverAgent(settings, on_role_change=a_changes)
        b, b_changes = _agent(cluster, "lapse", "b", 2.0, first=1)
        await a.start()
        await b.start()
        assert a.role == PRIMARY and b.role == SECONDARY
        a_changes.changes.clear()
        a_changes.queue = asyncio.Queue()
        await proxy.cut()
        cut = time.monotonic()
        demoted_at, demotion = await a_changes.next(timeout=5.0)
        promoted_at, promotion = await b_changes.next(timeout=10.0)
        assert promotion.new == PRIMARY
        await a.stop(unregister=False)
        await b.stop()
        return cut, demoted_at, promoted_at, demotion

    cut, demoted_at, promoted_at, demotion = asyncio.run(body())
    assert demotion.new == SECONDARY and "lapsed" in demotion.reason, demotion
    assert demoted_at - cut <= 2.0 + 0.5  # ValidFor < T after the last heartbeat was sent
    assert demoted_at < promoted_at  # P1: never two acting primaries


@pytest.mark.cluster
def test_agent_reregisters_after_its_session_is_deleted(cluster: Cluster) -> None:
    async def body() -> list[RoleChange]:
        a, changes = _agent(cluster, "gone", "a", 2.0)
        await a.start()
        assert a.role == PRIMARY
        changes.queue = asyncio.Queue()
        url = f"{cluster.urls[1]}{API}/groups/gone/clientsessions/a"
        assert (await asyncio.to_thread(cluster.client.delete, url)).status_code == 204
        seen = [(await changes.next(timeout=5.0))[1], (await changes.next(timeout=5.0))[1]]
        await a.stop()
        return seen

    lost, regained = asyncio.run(body())
    assert lost.new == SECONDARY and regained.new == PRIMARY, (lost, regained)
    assert regained.epoch is not None and lost.epoch is not None and regained.epoch > lost.epoch


@pytest.mark.cluster
@pytest.mark.parametrize(
    "query",
    [
        pytest.param("waitFor=abc", id="waitFor-text"),
        pytest.param("waitFor=61", id="waitFor-too-long"),
        pytest.param("waitFor=-1", id="waitFor-negative"),
        pytest.param("waitFor=nan", id="waitFor-nan"),
        pytest.param("knownEpoch=x", id="epoch-text"),
        pytest.param("knownEpoch=-3", id="epoch-negative"),
        pytest.param("knownRole=Boss", id="role-unknown"),
    ],
)
def test_role_long_poll_refuses_bad_parameters(cluster: Cluster, query: str) -> None:
    cluster.client.post(
        cluster.urls[0] + f"{API}/groups", json={"Id": "lp", "FailoverTimeout": "00:00:05"}
    )
    cluster.client.post(cluster.urls[0] + f"{API}/groups/lp/clientsessions", json={"Id": "s"})
    response = cluster.client.get(
        cluster.urls[1] + f"{API}/groups/lp/clientsessions/s/role?{query}"
    )
    assert response.status_code == 400, response.text
    assert {"OperationId", "Error", "Reason", "Resolution"} <= response.json().keys()


@pytest.mark.cluster
def test_role_long_poll_answers_news_at_once_waits_otherwise_and_wakes_on_a_follower(
    cluster: Cluster,
) -> None:
    client, urls = cluster.client, cluster.urls
    client.post(urls[0] + f"{API}/groups", json={"Id": "lp2", "FailoverTimeout": "00:00:05"})
    client.post(urls[0] + f"{API}/groups/lp2/clientsessions", json={"Id": "s"})
    role_url = f"{API}/groups/lp2/clientsessions/s/role"
    assert client.get(urls[0] + f"{API}/groups/lp2/clientsessions/nobody/role").status_code == 404
    now = client.get(urls[2] + role_url).json()  # no waitFor: answers at once
    assert now == {"Role": 0, "Epoch": 0, "LastDataProcessedTime": "0001-01-01T00:00:00"}
    started = time.monotonic()
    stale = client.get(urls[2] + role_url + "?waitFor=30&knownEpoch=5").json()
    assert stale["Epoch"] == 0 and time.monotonic() - started < 5
    started = time.monotonic()
    unchanged = client.get(urls[2] + role_url + "?waitFor=0.5&knownRole=Secondary&knownEpoch=0")
    assert unchanged.json()["Role"] == 0 and time.monotonic() - started >= 0.45

    async def body() -> tuple[dict[str, Any], float]:
        leader = cluster.leader_index()
        follower = (leader + 1) % 3
        async with httpx.AsyncClient(timeout=40) as aclient:
            poll = asyncio.ensure_future(
                aclient.get(urls[follower] + role_url + "?waitFor=30&knownRole=0&knownEpoch=0")
            )
            await asyncio.sleep(0.3)  # let the poll reach the follower; its answer is the event
            assert not poll.done()
            beat = f"{urls[leader]}{API}/groups/lp2/clientsessions/s/heartbeat"
            sent = time.monotonic()
            assert (await aclient.post(beat, json={"FailoverScore": 100})).json()["Role"] == 1
            answer = await poll
            return answer.json(), time.monotonic() - sent

    answer, waited = asyncio.run(body())
    assert answer["Role"] == 1 and answer["Epoch"] == 1
    assert waited < 5.0  # not the 30 s waitFor


# --------------------------------------------------------------------------- node failure


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(tmp_path) as running:
        yield running


@pytest.mark.cluster
def test_killing_the_leader_changes_no_role(own_cluster: Cluster) -> None:
    """P2 from the agent's side: the leader dies mid-run; both agents keep their roles."""
    cluster = own_cluster
    leader = cluster.leader_index()

    async def body() -> tuple[FailoverAgent, Recorder, Recorder, int | None, float]:
        a, a_changes = _agent(cluster, "kill", "a", 3.0, first=leader)
        b, b_changes = _agent(cluster, "kill", "b", 3.0, first=(leader + 1) % 3)
        await a.start()
        await b.start()
        assert a.role == PRIMARY and b.role == SECONDARY
        epoch = a.epoch
        a_changes.changes.clear()
        b_changes.changes.clear()
        await asyncio.to_thread(cluster.nodes[leader].kill)
        # Two full FailoverTimeouts: any spurious failover would have happened by then.
        assert not await b.wait_for_role(PRIMARY, 6.0)
        assert await a.wait_for_role(PRIMARY, 0.0)
        # From here on changes are expected: a unregisters on stop, which promotes b at once
        # if b is still running (and its long-poll may hear of it before b stops too).
        stopping = time.monotonic()
        await a.stop()
        await b.stop()
        return a, a_changes, b_changes, epoch, stopping

    a, a_changes, b_changes, epoch, stopping = asyncio.run(body())
    during_the_run = [c for t, c in a_changes.changes + b_changes.changes if t < stopping]
    assert during_the_run == []
    # a was Primary: its stop drops the grant and says so before the DELETE (Agent._resign).
    resigned = a_changes.changes[-1][1]
    assert (resigned.old, resigned.new, resigned.reason) == (PRIMARY, SECONDARY, "agent stopping")
    assert a.epoch == epoch


@pytest.mark.cluster
def test_a_stopping_node_answers_held_long_polls_503(own_cluster: Cluster) -> None:
    """SIGTERM releases held long-polls with a 503 (so agents rotate to another node) instead
    of holding up the shutdown until uvicorn's graceful timeout cancels them unanswered."""
    cluster = own_cluster
    client, urls = cluster.client, cluster.urls
    client.post(urls[0] + f"{API}/groups", json={"Id": "stop", "FailoverTimeout": "00:00:05"})
    client.post(urls[0] + f"{API}/groups/stop/clientsessions", json={"Id": "s"})
    victim = (cluster.leader_index() + 1) % 3
    role_url = f"{urls[victim]}{API}/groups/stop/clientsessions/s/role"

    async def body() -> httpx.Response:
        async with httpx.AsyncClient(timeout=40) as aclient:
            poll = asyncio.ensure_future(aclient.get(role_url + "?waitFor=30&knownRole=0"))
            await asyncio.sleep(0.3)  # let the poll reach the node (nothing to await on)
            assert not poll.done()
            cluster.nodes[victim].signal(signal.SIGTERM)
            return await poll

    answer = asyncio.run(body())
    assert answer.status_code == 503, answer.text
    assert "stopping" in answer.json()["Reason"] and answer.headers["retry-after"] == "1"
    assert cluster.nodes[victim].proc is not None
    cluster.nodes[victim].proc.wait(timeout=10)  # and the node went on to stop
