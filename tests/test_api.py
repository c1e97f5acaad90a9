"""In-process tests of every /api/v1/clientfailover endpoint against a real single-node cluster.

Each test builds a ``Node`` with its own Raft port and data directory, starts it on the main
thread's event loop (pysyncobj's tick thread dies with the thread that created the SyncObj, so
the loop runs on the main thread via ``asyncio.run``), waits until the node is ready, and talks
to the app through ``httpx.ASGITransport``. ASGITransport does not run the lifespan, so the test
starts and stops the node itself. Application exceptions propagate out of ASGITransport, so a
handler that would have produced a 5xx fails the test loudly.

Covers spec §2.2 rows 1-12, the response shapes of §3, the request leniency of §2.1 and the
interop checklist of §10 (trailing slashes, case-insensitive routes, never a redirect).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from support.clusterkit import free_ports

from cfs_cluster.api.app import create_app
from cfs_cluster.api.frontdoor import FrontDoor
from cfs_cluster.cluster.node import Node
from cfs_cluster.settings import FailoverSettings, RaftSettings, SecuritySettings, Settings

API = "/api/v1/clientfailover"
SECONDARY, PRIMARY, PENDING = 0, 1, 2
MIN_DATETIME = "0001-01-01T00:00:00"
ERROR_KEYS = {"OperationId", "Error", "Reason", "Resolution"}
GROUP_KEYS = {"Id", "Name", "Description", "FailoverTimeout", "AdditionalData"}
SESSION_KEYS = {
    "Id",
    "Name",
    "Heartbeat",
    "Role",
    "HeartbeatPosted",
    "RoleOverride",
    "RoleOverrideExpirationTime",
    "AdditionalData",
}
HEARTBEAT_KEYS = {"Role", "LastDataProcessedTime", "Epoch", "ValidFor"}
MIB = 1 << 20

Body = Callable[[httpx.AsyncClient, Node], Awaitable[None]]
Serve = Callable[[Body], None]


# --------------------------------------------------------------------------- harness


def _settings(data_dir: Path) -> Settings:
    api_port, raft_port = free_ports(2)
    return Settings(
        node_id="n1",
        api_host="127.0.0.1",
        api_port=api_port,
        raft_address=f"127.0.0.1:{raft_port}",
        peers=(),
        data_dir=data_dir,
        dev=True,
        security=SecuritySettings(auth="off"),
        # Short election timeouts only make the lone node lead sooner; a quick checkpoint lets
        # GET .../clientsessions show heartbeats without a long poll.
        raft=RaftSettings(
            min_timeout=0.2, max_timeout=0.3, append_entries_period=0.05, leader_fallback=0.5
        ),
        failover=FailoverSettings(checkpoint_interval=0.2),
    )


async def _serve(data_dir: Path, body: Body) -> None:
    node = Node(_settings(data_dir))
    app = create_app(node)
    await node.start()
    try:
        await _until_ready(node)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await body(client, node)
    finally:
        await node.stop()


async def _until_ready(node: Node, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    ready, why = node.is_ready()
    while not ready:
        assert time.monotonic() < deadline, f"node not ready after {timeout} s: {why}"
        await asyncio.sleep(0.02)
        ready, why = node.is_ready()


@pytest.fixture
def serve(tmp_path: Path) -> Serve:
    """Run an async test body against a fresh, ready single-node cluster."""

    def run(body: Body) -> None:
        asyncio.run(_serve(tmp_path / "node", body))

    return run


async def until(
    probe: Callable[[], Awaitable[Any]], what: str, timeout: float = 10.0, pause: float = 0.05
) -> Any:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(pause)


# --------------------------------------------------------------------------- helpers


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url.path}: expected {status}, "
        f"got {response.status_code} {response.text[:300]}"
    )
    if status == 204:
        assert response.content == b""
        return None
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    """Assert an ErrorResponse (spec §2.1) with ``status``; return its body."""
    body: dict[str, Any] = ok(response, status)
    assert isinstance(body, dict)
    assert set(body) >= ERROR_KEYS, body
    assert set(body) <= ERROR_KEYS | {"AdditionalParameters"}, body
    for key in ERROR_KEYS:
        assert isinstance(body[key], str) and body[key], (key, body)
    return body


async def make_group(
    client: httpx.AsyncClient, group: str, timeout: str = "00:01:00", status: int = 201
) -> dict[str, Any]:
    response = await client.post(f"{API}/groups", json={"Id": group, "FailoverTimeout": timeout})
    result: dict[str, Any] = ok(response, status)
    return result


async def make_session(
    client: httpx.AsyncClient, group: str, session: str, name: str | None = None
) -> dict[str, Any]:
    body = {"Id": session} if name is None else {"Id": session, "Name": name}
    result: dict[str, Any] = ok(
        await client.post(f"{API}/groups/{group}/clientsessions", json=body), 201
    )
    return result


async def beat(
    client: httpx.AsyncClient, group: str, session: str, body: Any = None
) -> dict[str, Any]:
    """Post a heartbeat; assert the heartbeat response shape (spec §3.4, §10 item 4)."""
    url = f"{API}/groups/{group}/clientsessions/{session}/heartbeat"
    answer: dict[str, Any] = ok(
        await client.post(url, json={"FailoverScore": 100} if body is None else body)
    )
    assert set(answer) == HEARTBEAT_KEYS, answer
    assert answer["Role"] in (SECONDARY, PRIMARY, PENDING)
    assert isinstance(answer["LastDataProcessedTime"], str)  # never null toward adapters
    assert isinstance(answer["Epoch"], int) and not isinstance(answer["Epoch"], bool)
    assert isinstance(answer["ValidFor"], str)
    return answer


async def confirm(client: httpx.AsyncClient, group: str, session: str) -> dict[str, Any]:
    """Heartbeat as an adapter does: answer PendingPrimary at once, at most 10 times (spec §4.2)."""
    answer = await beat(client, group, session)
    for _ in range(10):
        if answer["Role"] != PENDING:
            break
        answer = await beat(client, group, session)
    return answer


async def get(client: httpx.AsyncClient, path: str) -> Any:
    return ok(await client.get(f"{API}{path}"))


def ticks(text: str) -> dt.datetime:
    """Parse a response date-time (7 fractional digits and Z) to an aware datetime (µs)."""
    assert text.endswith("Z"), text
    date, frac = text[:-1].split(".")
    assert len(frac) == 7, text
    return dt.datetime.fromisoformat(f"{date}.{frac[:6]}+00:00")


def assert_session_shape(session: dict[str, Any]) -> None:
    assert set(session) == SESSION_KEYS, session
    assert session["Role"] in (SECONDARY, PRIMARY, PENDING)  # never null
    assert session["RoleOverride"] in (0, 1)
    assert isinstance(session["HeartbeatPosted"], bool)


# --------------------------------------------------------------------------- §2.2 rows 1-5


def test_application_information(serve: Serve) -> None:
    async def body(client: httpx.AsyncClient, node: Node) -> None:
        info = ok(await client.get(API))
        assert set(info) == {"Version"} and isinstance(info["Version"], str) and info["Version"]

    serve(body)


def test_group_create_is_idempotent_and_readable(serve: Serve) -> None:
    async def body(client: httpx.AsyncClient, node: Node) -> None:
        url = f"{API}/groups"
        created = ok(
            await client.post(
                url,
                json={
                    "Id": "G1",
                    "Name": "Line 1",
                    "Description": "Press shop",
                    "FailoverTimeout": "00:01:00",
                    "AdditionalData": {"site": "north", "nested": {"list": [1, 2]}},
                },
            ),
            201,
        )
        assert created == {
            "Id": "G1",
            "Name": "Line 1",
            "Description": "Press shop",
            "FailoverTimeout": "00:01:00",
            "AdditionalData": {"site": "north", "nested": {"list": [1, 2]}},
        }
        # Same configuration: 200 with the stored group; equal TimeSpans in other spellings
        # and omitted Name/Description (what the adapter sends) count as the same.
        for same in (
            {"Id": "G1", "Name": "Line 1", "FailoverTimeout": "00:01:00"},
            {"Id": "G1", "FailoverTimeout": "0.00:01:00.0000000"},
            {"Id": "G1", "FailoverTimeout": 60},
        ):
            assert ok(await client.post(url, json=same), 200) == created
        # Different configuration: 409, and the group keeps its configuration.
        for different in (
            {"Id": "G1", "FailoverTimeout": "00:02:00"},
            {"Id": "G1", "Name": "Other", "FailoverTimeout": "00:01:00"},
            {"Id": "G1", "Description": "Other", "FailoverTimeout": "00:01:00"},
        ):
            error(await client.post(url, json=different), 409)
        assert await get(client, "/groups/G1") == created
        error(await client.get(f"{API}/groups/nope"), 404)
        # Ids are opaque: any printable Unicode travels through the URL.
        unicode_id = "Zeile ü 组-1 #?&%"
        await make_group(client, unicode_id)
        got = ok(await client.get(f"{API}/groups/{quote(unicode_id, safe='')}"))
        assert got["Id"] == unicode_id

    serve(body)


def test_group_list_total_count_and_paging(serve: Serve) -> None:
    async def body(client: httpx.AsyncClient, node: Node) -> None:
        empty = await client.get(f"{API}/groups")
        assert ok(empty) == [] and empty.headers["Total-Count"] == "0"
        ids = [f"g{i}" for i in range(5)]
        for group in ids:
            await make_group(client, group)
        response = await client.get(f"{API}/groups")
        groups = ok(response)
        assert [g["Id"] for g in groups] == ids
        assert all(set(g) == GROUP_KEYS for g in groups)
        assert response.headers["Total-Count"] == "5"
        for skip, count in ((0, 2), (1, 2), (3, 10), (5, 1), (99, 5), (0, 0)):
            page = await client.get(f"{API}/groups", params={"skip": skip, "count": count})
            assert [g["Id"] for g in ok(page)] == ids[skip : skip + count], (skip, count)
            assert page.headers["Total-Count"] == "5"
        for bad in (
            {"skip": -1},
            {"count": -1},
            {"count": 10_001},
            {"skip": "abc"},
            {"count": "1.5"},
        ):
            error(await client.get(f"{API}/groups", params=bad), 400)

    serve(body)


def test_group_delete(serve: Serve) -> None:
    async def body(client: httpx.AsyncClient, node: Node) -> None:
        await make_group(client, "G")
        await make_session(client, "G", "s1")
        busy = error(await client.delete(f"{API}/groups/G"), 409)
        assert "session" in busy["Reason"]
        assert (await get(client, "/groups/G"))["Id"] == "G"
        ok(await client.delete(f"{API}/groups/G/clientsessions/s1"), 204)
        error(await client.delete(f"{API}/groups/G/clientsessions/s1"), 404)
        ok(await client.delete(f"{API}/groups/G"), 204)
        error(await client.delete(f"{API}/groups/G"), 404)
        error(await client.get(f"{API}/groups/G"), 404)
        assert ok(await client.get(f"{API}/groups")) == []
        # The id is free again: a new create is 201.
        await make_group(client, "G", "00:00:30")

    serve(body)


def test_request_id_makes_retries_idempotent_per_request(serve: Serve) -> None:
    async def body(client: httpx.AsyncClient, node: Node) -> None:
        retry = {"Request-Id": "r-1"}
        groups = f"{API}/groups"
        first = ok(
            await client.post(groups, json={"Id": "G", "FailoverTimeout": 60}, headers=retry), 201
        )
        assert first["Id"] == "G"
        ok(await client.delete(f"{groups}/G"), 204)
        # A retry of the same request replays its result and does not create the group again.
        again = await client.post(groups, json={"Id": "G", "FailoverTimeout": 60}, headers=retry)
        # (It answers 404: the replayed create names a group that no longer exists.)
        error(again, 404)
        assert ok(await client.get(groups)) == []
        # The same Request-Id on another request is another request: it is applied.
        await make_group(client, "H")
        session = await client.post(f"{groups}/H/clientsessions", json={"Id": "s"}, headers=retry)
        assert ok(session, 201)["Id"] == "s"
        ok(await client.delete(f"{groups}/H/clientsessions/s", headers=retry), 204)
        assert await get(client, "/groups/H/clientsessions") == []

    serve(body)


# --------------------------------------------------------------------------- §2.2 rows 6-10


def test_sessions_register_list_get_delete(serve: Serve) -> None:
    async def body(client: httpx.AsyncClient, node: Node) -> None:
        await make_group(client, "G")
        url = f"{API}/groups/G/clientsessions"
        first = await make_session(client, "G", "host1.OpcUa1", "host1 OpcUa1")
        assert_session_shape(first)
        assert first == {
            "Id": "host1.OpcUa1",
            "Name": "host1 OpcUa1",
            "Heartbeat": None,
            "Role": SECONDARY,
            "HeartbeatPosted": False,
            "RoleOverride": 0,
            "RoleOverrideExpirationTime": None,
            "AdditionalData": None,
        }
        # Re-registering after an adapter restart must be 2xx (spec §10 item 3).
        assert (
            ok(await client.post(url, json={"Id": "host1.OpcUa1", "Name": "host1 OpcUa1"})) == first
        )
        assert ok(await client.post(url, json={"Id": "host1.OpcUa1"})) == first
        error(await client.post(url, json={"Id": "host1.OpcUa1", "Name": "renamed"}), 409)
        error(await client.post(f"{API}/groups/nope/clientsessions", json={"Id": "x"}), 404)
        second = await make_session(client, "G", "host2.OpcUa1")
        sessions = await get(client, "/groups/G/clientsessions")
        assert sessions == [first, second]
        assert await get(client, "/groups/G/clientsessions/host2.OpcUa1") == second
        error(await client.get(f"{API}/groups/G/clientsessions/nope"), 404)
        error(await client.get(f"{API}/groups/nope/clientsessions"), 404)
        error(await client.get(f"{API}/groups/nope/clientsessions/host1.OpcUa1"), 404)
        error(await client.delete(f"{API}/groups/nope/clientsessions/host1.OpcUa1"), 404)
        ok(await client.delete(f"{url}/host1.OpcUa1"), 204)
        assert await get(client, "/groups/G/clientsessions") == [second]

    serve(body)


def test_group_status_shape(serve: Serve) -> None:
    async def body(client: httpx.AsyncClient, node: Node) -> None:
        await make_group(client, "G")
        status = await get(client, "/groups/G/status")
        assert status == {
            "Primary": None,
            "PendingPrimary": None,
            "LastDataProcessedTime": None,
            "Epoch": 0,
        }
        error(await client.get(f"{API}/groups/nope/status"), 404)

    serve(body)


# --------------------------------------------------------------------------- §2.2 row 11


def test_heartbeat_roles_reasons_and_data_time(serve: Serve) -> None:
    async def body(client: httpx.AsyncClient, node: Node) -> None:
        await make_group(client, "G", "00:00:30")
        await make_session(client, "G", "a")
        lone = await beat(client, "G", "a", {"FailoverScore": 80})
        assert lone["Role"] == PRIMARY and lone["Epoch"] == 1
        assert lone["LastDataProcessedTime"] == MIN_DATETIME  # unknown: MinValue, never null
        assert lone["ValidFor"] == "00:00:29.9700000"  # 0.999 x FailoverTimeout
        events = node.replicator.state.groups["G"].events
        assert [(e.new_primary, e.reason) for e in events] == [("a", "Only one client in group")]

        await make_session(client, "G", "b")
        second = await beat(client, "G", "b", {"FailoverScore": 80})
        assert second["Role"] == SECONDARY and second["Epoch"] == 1
        assert second["ValidFor"] == "00:00:00"  # a Secondary holds no grant
        # The primary's data time (7 digits, no Z: UTC assumed) becomes the group's.
        stamped = await beat(
            client,
            "G",
            "a",
            {"FailoverScore": 80, "LastDataProcessedTime": "2026-01-02T03:04:05.1234567"},
        )
        assert stamped["Role"] == PRIMARY
        assert stamped["LastDataProcessedTime"] == "2026-01-02T03:04:05.1234567Z"
        # A secondary's data time does not move the group's; it is told the primary's.
        told = await beat(
            client,
            "G",
            "b",
            {"FailoverScore": 80, "LastDataProcessedTime": "2030-01-01T00:00:00Z"},
        )
        assert told["Role"] == SECONDARY
        assert told["LastDataProcessedTime"] == "2026-01-02T03:04:05.1234567Z"
        # Equal scores never flip the role; the status names the primary.
        assert (await beat(client, "G", "a", {"FailoverScore": 80}))["Role"] == PRIMARY
        # The status reads replicated state: the data time appears with the next checkpoint.
        data_time = await until(
            lambda: _status_time(client, "G"), "the group's data time to be checkpointed"
        )
        assert data_time == "2026-01-02T03:04:05.1234567Z"
        assert await get(client, "/groups/G/status") == {
            "Primary": "a",
            "PendingPrimary": None,
            "LastDataProcessedTime": data_time,
            "Epoch": 1,
        }
        roles = {s["Id"]: s["Role"] for s in await get(client, "/groups/G/clientsessions")}
        assert roles == {"a": PRIMARY, "b": SECONDARY}
        for group, session in (("G", "nope"), ("nope", "a")):
            url = f"{API}/groups/{group}/clientsessions/{session}/heartbeat"
            error(await client.post(url, json={"FailoverScore": 1}), 404)

    serve(body)


async def _status_time(client: httpx.AsyncClient, group: str) -> str | None:
    value: str | None = (await get(client, f"/groups/{group}/status"))["LastDataProcessedTime"]
    return value


def test_failover_when_primary_goes_silent(serve: Serve) -> None:
    async def body(client: httpx.AsyncClient, node: Node) -> None:
        await make_group(client, "G", "00:00:01")
        await make_session(client, "G", "a")
        await make_session(client, "G", "b")
        # Taken before a's last heartbeat is sent: a lower bound of when the server heard it.
        a_silent_since = time.monotonic()
        assert (await beat(client, "G", "a"))["Role"] == PENDING  # named, not yet confirmed
        assert (await beat(client, "G", "a"))["Role"] == PRIMARY
        assert (await beat(client, "G", "b"))["Role"] == SECONDARY
        seen: list[int] = []

        async def b_is_primary() -> dict[str, Any] | None:
            answer = await beat(client, "G", "b")
            seen.append(answer["Role"])
            return answer if answer["Role"] == PRIMARY else None

        promoted = await until(b_is_primary, "b to be promoted", timeout=10, pause=0.1)
        # P1: b is not granted while a's grant (FailoverTimeout) may still be valid.
        assert time.monotonic() - a_silent_since >= 1.0
        assert set(seen[:-1]) <= {SECONDARY, PENDING}, seen
        assert promoted["Epoch"] == 2 and promoted["ValidFor"] == "00:00:00.9990000"
        status = await get(client, "/groups/G/status")
        assert (status["Primary"], status["PendingPrimary"], status["Epoch"]) == ("b", None, 2)
        events = node.replicator.state.groups["G"].events
        assert (events[-1].new_primary, events[-1].epoch) == ("b", 2)
        # a lost the role either to b directly or, when the stale sweep ran before b's next
        # heartbeat, in an event of its own just before.
        taken_from_a = events[-1].old_primary == "a"
        dropped_first = (events[-2].old_primary, events[-2].new_primary) == ("a", None)
        assert taken_from_a or dropped_first, events[-2:]
        # The old primary returns: it is told Secondary, with the new epoch.
        back = await beat(client, "G", "a")
        assert (back["Role"], back["Epoch"]) == (SECONDARY, 2)

    serve(body)


# --------------------------------------------------------------------------- §2.2 row 12


def test_role_override_primary_off_and_expiry(serve: Serve) -> None:
    async def body(client: httpx.AsyncClient, node: Node) -> None:
        await make_group(client, "G", "00:00:30")
        await make_session(client, "G", "a")
        await make_session(client, "G", "b")
        assert (await confirm(client, "G", "a"))["Role"] == PRIMARY
        assert (await beat(client, "G", "b"))["Role"] == SECONDARY

        def url(session: str) -> str:
            return f"{API}/groups/G/clientsessions/{session}/roleoverride"

        forced = ok(await client.post(url("b"), json={"Value": "Primary"}))
        assert forced == {"Value": 1, "RoleOverrideExpirationTime": None}
        session_b = await get(client, "/groups/G/clientsessions/b")
        assert (session_b["RoleOverride"], session_b["RoleOverrideExpirationTime"]) == (1, None)
        # P1: a may still act on its grant; b waits as PendingPrimary until a acknowledges
        # (our agent's HeldRole/HeldEpoch) or a's grant lapses (T = 30 s here).
        status = await get(client, "/groups/G/status")
        assert status["PendingPrimary"] == "b" and status["Primary"] in ("a", None)
        assert (await beat(client, "G", "a"))["Role"] == SECONDARY
        assert (await beat(client, "G", "b"))["Role"] == PENDING  # telling a freed nothing
        acknowledged = {"FailoverScore": 100, "HeldRole": "Secondary", "HeldEpoch": 1}
        assert (await beat(client, "G", "a", acknowledged))["Role"] == SECONDARY
        assert (await confirm(client, "G", "b"))["Role"] == PRIMARY
        # Off cancels the override; b keeps the role as the incumbent.
        assert ok(await client.post(url("b"), json={"Value": "Off"})) == {
            "Value": 0,
            "RoleOverrideExpirationTime": None,
        }
        session_b = await get(client, "/groups/G/clientsessions/b")
        assert (session_b["RoleOverride"], session_b["Role"]) == (0, PRIMARY)

        # An override with a period expires by itself and roles return to automatic.
        before = dt.datetime.now(dt.UTC)
        timed = ok(await client.post(url("a"), json={"Value": 1, "ExpirationPeriod": "00:00:01"}))
        assert timed["Value"] == 1
        expiry = ticks(timed["RoleOverrideExpirationTime"])
        assert before + dt.timedelta(seconds=1) <= expiry + dt.timedelta(milliseconds=1)
        assert expiry <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
        session_a = await get(client, "/groups/G/clientsessions/a")
        assert session_a["RoleOverride"] == 1
        assert session_a["RoleOverrideExpirationTime"] == timed["RoleOverrideExpirationTime"]

        async def override_cleared() -> bool:
            session = await get(client, "/groups/G/clientsessions/a")
            return session["RoleOverride"] == 0 and session["RoleOverrideExpirationTime"] is None

        await until(override_cleared, "the timed override to expire")
        status = await get(client, "/groups/G/status")
        assert (status["Primary"], status["PendingPrimary"]) == ("b", None)

        refused = error(await client.post(url("a"), json={"Value": "Secondary"}), 400)
        assert "Secondary" in refused["Reason"]
        error(
            await client.post(
                f"{API}/groups/G/clientsessions/nope/roleoverride", json={"Value": 1}
            ),
            404,
        )
        error(
            await client.post(
                f"{API}/groups/nope/clientsessions/a/roleoverride", json={"Value": 1}
            ),
            404,
        )

    serve(body)


# --------------------------------------------------------------------------- leniency


def test_request_leniency(serve: Serve) -> None:
    async def body(client: httpx.AsyncClient, node: Node) -> None:
        groups = f"{API}/groups"
        cases = {
            "lower": ({"id": "lower", "failovertimeout": "00:00:30.5"}, "00:00:30.5000000"),
            "upper": ({"ID": "upper", "FAILOVERTIMEOUT": "1.00:00:00"}, "1.00:00:00"),
            "mixed": ({"iD": "mixed", "fAiLoVeRtImEoUt": "0.00:02:03.1234567"}, "00:02:03.1234567"),
            "short": ({"Id": "short", "FailoverTimeout": "0:5"}, "00:05:00"),
            "seconds": ({"Id": "seconds", "FailoverTimeout": 90, "Unknown": [1]}, "00:01:30"),
        }
        for group, (request, timeout) in cases.items():
            created = ok(await client.post(groups, json=request), 201)
            assert (created["Id"], created["FailoverTimeout"]) == (group, timeout)

        ok(await client.post(f"{groups}/lower/clientsessions", json={"iD": "s", "nAmE": "n"}), 201)
        session = await get(client, "/groups/lower/clientsessions/s")
        assert (session["Id"], session["Name"]) == ("s", "n")
        # Legacy heartbeat (FailoverStatus, HeartbeatTime), any casing, offsets and no Z.
        answer = await beat(
            client,
            "lower",
            "s",
            {
                "failoverstatus": "70",
                "HEARTBEATTIME": "2026-05-06T07:08:09.1234567",
                "lastDataProcessedTime": "2026-05-06T07:08:09.7654321+02:00",
            },
        )
        assert answer["Role"] == PRIMARY
        assert answer["LastDataProcessedTime"] == "2026-05-06T05:08:09.7654321Z"

        async def heartbeat_posted() -> dict[str, Any] | None:
            found: dict[str, Any] = await get(client, "/groups/lower/clientsessions/s")
            return found if found["HeartbeatPosted"] else None

        session = await until(heartbeat_posted, "the heartbeat to be checkpointed")
        assert_session_shape(session)
        assert session["Heartbeat"] == {
            "FailoverScore": 70.0,
            "LastDataProcessedTime": "2026-05-06T05:08:09.7654321Z",
            "HeartbeatTime": "2026-05-06T07:08:09.1234567Z",
        }
        # Enums by name in any casing, or by number (also as a string).
        override = f"{groups}/lower/clientsessions/s/roleoverride"
        for value, number in (("PRIMARY", 1), ("off", 0), (1, 1), ("0", 0), ("pRiMaRy", 1)):
            answer_o = ok(await client.post(override, json={"vAlUe": value}))
            assert answer_o["Value"] == number, value
        period = ok(
            await client.post(
                override, json={"Value": "Primary", "expirationperiod": "1.02:03:04.5"}
            )
        )
        expiry = ticks(period["RoleOverrideExpirationTime"])
        expected = dt.datetime.now(dt.UTC) + dt.timedelta(days=1, hours=2, minutes=3, seconds=4.5)
        assert abs(expiry - expected) < dt.timedelta(seconds=30)

    serve(body)


# --------------------------------------------------------------------------- routing


def test_routes_are_case_insensitive_with_trailing_slash_and_never_redirect(serve: Serve) -> None:
    async def body(client: httpx.AsyncClient, node: Node) -> None:
        # httpx does not follow redirects unless told: a 3xx would fail the status checks.
        root = "/api/v1/ClientFailover"
        created = ok(
            await client.post(
                f"{root}/groups/", json={"Id": "Mixed", "FailoverTimeout": "00:01:00"}
            ),
            201,
        )
        assert created["Id"] == "Mixed"
        assert ok(await client.get("/API/V1/CLIENTFAILOVER/GROUPS/Mixed/"))["Id"] == "Mixed"
        assert ok(await client.get("/api/v1/clientfailover/Groups/")) == [created]
        ok(await client.post(f"{root}/Groups/Mixed/ClientSessions/", json={"Id": "S"}), 201)
        ok(await client.post(f"{root}/groups/Mixed/clientSessions", json={"Id": "S"}), 200)
        assert ok(await client.get(f"{root}/groups/Mixed/ClientSessions/S/"))["Id"] == "S"
        assert len(ok(await client.get(f"{root}/GROUPS/Mixed/CLIENTSESSIONS/"))) == 1
        hb = ok(
            await client.post(
                f"{root}/Groups/Mixed/ClientSessions/S/HeartBeat/", json={"FailoverScore": 1}
            )
        )
        assert hb["Role"] == PRIMARY
        assert ok(await client.get(f"{root}/groups/Mixed/Status/"))["Primary"] == "S"
        ok(
            await client.post(
                f"{root}/groups/Mixed/clientsessions/S/RoleOverride/", json={"Value": "Off"}
            )
        )
        assert ok(await client.get("/api/v1/CLIENTFAILOVER/"))["Version"]
        ok(await client.delete(f"{root}/Groups/Mixed/ClientSessions/S/"), 204)
        ok(await client.delete(f"{root}/GROUPS/Mixed/"), 204)

    serve(body)


def test_every_error_carries_an_error_response(serve: Serve) -> None:
    async def body(client: httpx.AsyncClient, node: Node) -> None:
        await make_group(client, "G")
        await make_session(client, "G", "s")
        for path in (
            "/api",
            "/ui/nothing.js",  # "/" itself redirects to the dashboard (docs/dashboard.md)
            "/api/v1/nothing",
            f"{API}/nothing",
            f"{API}/groups/G/bogus",
            f"{API}/groups/G/clientsessions/s/bogus",
            f"{API}/groups//clientsessions",
        ):
            error(await client.get(path), 404)
        for method, path, allow in (
            ("PUT", f"{API}/groups", {"GET", "POST"}),
            ("DELETE", f"{API}/groups/", {"GET", "POST"}),
            ("PATCH", f"{API}/Groups/G", {"GET", "DELETE"}),
            ("PUT", f"{API}/groups/G/clientsessions", {"GET", "POST"}),
            ("PUT", f"{API}/groups/G/clientsessions/s", {"GET", "DELETE"}),
            ("GET", f"{API}/groups/G/clientsessions/s/heartbeat", {"POST"}),
            ("GET", f"{API}/groups/G/clientsessions/s/roleoverride", {"POST"}),
            ("POST", f"{API}/groups/G/status", {"GET"}),
            ("DELETE", API, {"GET"}),
        ):
            response = await client.request(method, path)
            error(response, 405)
            # RFC 9110: the Allow header lists every method the resource supports.
            assert set(response.headers["allow"].split(", ")) == allow, (method, path)

    serve(body)


# --------------------------------------------------------------------------- hostile input


def _nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"x": value}
    return value


def _group_bodies() -> list[Any]:
    good = {"Id": "hostile", "FailoverTimeout": "00:01:00"}
    raw: list[Any] = [
        b"",
        b"   ",
        b"{",
        b'{"Id": "hostile", "FailoverTimeout": "00:01:00"',
        b"[]",
        json.dumps([good]).encode(),
        b"null",
        b"42",
        b'"text"',
        b"\xff\xfe{}",
        b'{"Id": "hostile", "id": "other", "FailoverTimeout": "00:01:00"}',
        b"[" * 100_000 + b"]" * 100_000,  # deeper than the JSON parser's recursion limit
    ]
    ids = [
        5,
        None,
        "",
        "   ",
        "x" * 257,
        "a\x00b",
        "a\nb",
        "a\tb",
        "a\x7fb",
        "a/b",
        ["x"],
        {"x": 1},
        True,
    ]
    timeouts = [
        0,
        "00:00:00",
        "00:00:00.5",
        "00:00:00.9999999",
        "2.00:00:00",
        "1.00:00:00.0000001",
        "-00:01:00",
        "24:00:00",
        "00:60:00",
        "99999999.00:00:00",
        "garbage",
        "",
        "00:01:00:00",
        "٠٠:٠١:٠٠",  # Arabic-Indic digits are not .NET TimeSpan digits
        True,
        None,
        [60],
        {},
        10**400,
        -5,
    ]
    bodies: list[Any] = list(raw)
    bodies += [{**good, "Id": value} for value in ids]
    bodies += [{**good, "FailoverTimeout": value} for value in timeouts]
    bodies += [{"Id": "hostile"}]  # FailoverTimeout missing
    bodies += [
        {**good, "Name": 5},
        {**good, "Name": "n" * 1025},
        {**good, "Description": []},
        {**good, "AdditionalData": [1, 2]},
        {**good, "AdditionalData": "text"},
        {**good, "AdditionalData": 7},
        {**good, "AdditionalData": _nested(60)},
        {**good, "AdditionalData": {"blob": "b" * (65 * 1024)}},
    ]
    return bodies


def _session_bodies() -> list[Any]:
    good = {"Id": "hostile-session"}
    bodies: list[Any] = [b"", b"{", b"[]", json.dumps([good]).encode(), b"null", b"\xff"]
    for value in (5, None, "", " ", "x" * 257, "a\x00b", "a\rb", "a/b", ["x"], False):
        bodies.append({**good, "Id": value})
    bodies += [
        {"Name": "no id"},
        {**good, "Name": ["n"]},
        {**good, "AdditionalData": _nested(60)},
        {**good, "AdditionalData": [1]},
    ]
    return bodies


def _heartbeat_bodies() -> list[Any]:
    bodies: list[Any] = [
        b"",
        b"{",
        b"[]",
        b'[{"FailoverScore": 100}]',
        b"null",
        b'{"FailoverScore": NaN}',
        b'{"FailoverScore": Infinity}',
        b'{"FailoverScore": -Infinity}',
        b'{"FailoverScore": 1e999}',
        b'{"FailoverScore": 1' + b"0" * 400 + b"}",
        b'{"FailoverScore": 100, "failoverscore": 1}',
        {},
        {"LastDataProcessedTime": "2026-01-01T00:00:00Z"},
    ]
    for score in (
        -1,
        101,
        -0.0001,
        100.0001,
        "abc",
        "NaN",
        "Infinity",
        "1e999",
        "",
        True,
        False,
        None,
        [50],
        {"v": 1},
    ):
        bodies.append({"FailoverScore": score})
    stamp: Any
    for stamp in (
        12345,
        "garbage",
        "",
        "2026-13-01T00:00:00",
        "2026-02-30T00:00:00",
        "2026-01-01T24:00:00",
        "2026-01-01T00:00:00+99:00",
        "2026-01-01T00:00:00.12345678Z",
        "10000-01-01T00:00:00",
        True,
        [],
    ):
        bodies.append({"FailoverScore": 50, "LastDataProcessedTime": stamp})
        bodies.append({"FailoverScore": 50, "HeartbeatTime": stamp})
    bodies.append({"FailoverScore": 50, "AdditionalData": _nested(60)})  # unknown, but too deep
    return bodies


def _override_bodies() -> list[Any]:
    bodies: list[Any] = [b"", b"{", b"[]", b'[{"Value": "Primary"}]', b"null", {}]
    for value in ("Secondary", "secondary", "SECONDARY", 2, -1, 1.5, "maybe", "", True, None, [1]):
        bodies.append({"Value": value})
    period: Any
    for period in (
        "garbage",
        0,
        "00:00:00",
        "-00:01:00",
        "10675199.02:48:05.4775807",
        1e300,
        True,
        [],
    ):
        bodies.append({"Value": "Primary", "ExpirationPeriod": period})
    return bodies


async def _post_raw(client: httpx.AsyncClient, url: str, payload: Any) -> httpx.Response:
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return await client.post(url, content=content, headers={"content-type": "application/json"})


def test_hostile_input_is_refused_and_changes_nothing(serve: Serve) -> None:
    async def body(client: httpx.AsyncClient, node: Node) -> None:
        group = await make_group(client, "G")
        session = await make_session(client, "G", "s", "adapter s")
        status = await get(client, "/groups/G/status")
        batches = (
            (f"{API}/groups", _group_bodies()),
            (f"{API}/groups/G/clientsessions", _session_bodies()),
            (f"{API}/groups/G/clientsessions/s/heartbeat", _heartbeat_bodies()),
            (f"{API}/groups/G/clientsessions/s/roleoverride", _override_bodies()),
        )
        for url, bodies in batches:
            for payload in bodies:
                response = await _post_raw(client, url, payload)
                assert response.status_code == 400, (url, repr(payload)[:120], response.text[:200])
                error(response, 400)
        # Hostile ids in the URL of the heartbeat (ids are validated before any lookup).
        for bad_id in ("x" * 257, "a%00b", "a%0Ab", "%20"):
            for url in (
                f"{API}/groups/{bad_id}/clientsessions/s/heartbeat",
                f"{API}/groups/G/clientsessions/{bad_id}/heartbeat",
            ):
                error(await client.post(url, json={"FailoverScore": 50}), 400)
        # Lookups by such ids simply find nothing.
        for url in (f"{API}/groups/{'x' * 257}", f"{API}/groups/a%00b/clientsessions"):
            error(await client.get(url), 404)

        # Nothing above changed the state: exactly what the valid requests created.
        listed = await client.get(f"{API}/groups")
        assert ok(listed) == [group] and listed.headers["Total-Count"] == "1"
        assert await get(client, "/groups/G/clientsessions") == [session]
        assert await get(client, "/groups/G/status") == status
        assert node.replicator.state.groups["G"].events == []

    serve(body)


def test_bodies_over_the_limit_are_413(serve: Serve) -> None:
    async def body(client: httpx.AsyncClient, node: Node) -> None:
        await make_group(client, "G")
        await make_session(client, "G", "s")
        big = b'{"Id": "big", "FailoverTimeout": "00:01:00", "Name": "' + b"n" * MIB + b'"}'
        urls = (
            f"{API}/groups",
            f"{API}/groups/G/clientsessions",
            f"{API}/groups/G/clientsessions/s/heartbeat",
            f"{API}/groups/G/clientsessions/s/roleoverride",
        )
        for url in urls:
            # Declared by Content-Length: refused before the body is read.
            error(await _post_raw(client, url, big), 413)

            # Chunked, without Content-Length: refused while reading.
            async def chunks() -> AsyncIterator[bytes]:
                for start in range(0, len(big), 64 * 1024):
                    yield big[start : start + 64 * 1024]

            response = await client.post(url, content=chunks())
            assert "content-length" not in response.request.headers
            error(response, 413)
        assert [g["Id"] for g in ok(await client.get(f"{API}/groups"))] == ["G"]
        assert [s["Id"] for s in await get(client, "/groups/G/clientsessions")] == ["s"]
        # Just under the limit is parsed normally (here: an unknown property is ignored).
        fits = (
            b'{"Id": "fits", "FailoverTimeout": "00:01:00", "Pad": "' + b"p" * (MIB - 100) + b'"}'
        )
        assert len(fits) <= MIB
        ok(await _post_raw(client, f"{API}/groups", fits), 201)

    serve(body)


def test_fastapi_heartbeat_route_keeps_the_contract(serve: Serve) -> None:
    """The documented FastAPI heartbeat route answers like the front door's lean path."""

    async def body(client: httpx.AsyncClient, node: Node) -> None:
        await make_group(client, "G")
        await make_session(client, "G", "s")
        front = create_app(node)
        assert isinstance(front, FrontDoor)
        transport = httpx.ASGITransport(app=front.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as inner:
            url = f"{API}/groups/G/clientsessions/s/heartbeat"
            answer = ok(await inner.post(url, json={"failoverstatus": 40}))
            assert set(answer) == HEARTBEAT_KEYS
            assert (answer["Role"], answer["LastDataProcessedTime"]) == (PRIMARY, MIN_DATETIME)
            error(await inner.post(url, json={"FailoverScore": 101}), 400)
            error(await inner.post(url, content=b"[]"), 400)
            missing = f"{API}/groups/G/clientsessions/nope/heartbeat"
            error(await inner.post(missing, json={"FailoverScore": 1}), 404)

    serve(body)


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"HeldRole": "Boss"}, id="role-unknown"),
        pytest.param({"HeldRole": "Secondary", "HeldEpoch": -1}, id="epoch-negative"),
        pytest.param({"HeldRole": "Secondary", "HeldEpoch": "1"}, id="epoch-text"),
        pytest.param({"HeldRole": "Secondary", "HeldEpoch": True}, id="epoch-bool"),
        pytest.param({"HeldEpoch": 10**30}, id="epoch-huge"),
    ],
)
def test_heartbeat_refuses_a_malformed_held_role_or_epoch(
    serve: Serve, extra: dict[str, Any]
) -> None:
    """Our agent's HeldRole/HeldEpoch extension: malformed values are a 400 naming the field,
    and change nothing; absent values (AVEVA adapters) are the normal case."""

    async def body(client: httpx.AsyncClient, node: Node) -> None:
        await make_group(client, "H")
        await make_session(client, "H", "s")
        url = f"{API}/groups/H/clientsessions/s/heartbeat"
        refused = error(await client.post(url, json={"FailoverScore": 50, **extra}), 400)
        assert "Held" in str(refused)
        answer = ok(await client.post(url, json={"FailoverScore": 50, "heldrole": "primary"}))
        assert answer["Role"] == PRIMARY

    serve(body)
