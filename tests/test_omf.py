"""OMF health egress against a real OMF receiver that enforces PI Web API's rules (omf_receiver.py).

In-process tests drive ``HealthEgress.cycle()`` with controlled clocks (no sleeping); the cluster
test runs three real nodes pointed at the receiver and kills the leader.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support.clusterkit import Cluster
from support.omf_receiver import OmfReceiver

from cfs_cluster.engine.configuration import HealthEndpoint
from cfs_cluster.ops import omf
from cfs_cluster.ops.omf import messages

INTERVAL = 60.0
T0 = 1_700_000_040.0  # a slot boundary for a 60 s interval


@dataclass
class FakeNode:
    node_id: str
    endpoints: tuple[HealthEndpoint, ...]
    leader: bool = True
    counts: tuple[int, int] = (2, 3)
    now: list[float] = field(default_factory=lambda: [T0])
    mono: list[float] = field(default_factory=lambda: [0.0])

    def egress(self, tmp: Path) -> omf.HealthEgress:
        source = omf.HealthSource(
            self.node_id,
            "plant",
            lambda: self.endpoints,
            lambda: self.counts,
            lambda: self.leader,
            lambda: True,
        )
        return omf.HealthEgress(
            source,
            INTERVAL,
            None,
            T0 - 100,
            tmp,
            wall=lambda: self.now[0],
            clock=lambda: self.mono[0],
        )


@pytest.fixture
def receiver() -> Iterator[OmfReceiver]:
    with OmfReceiver(credentials=("svc", "pw")) as running:
        yield running


def _endpoint(receiver: OmfReceiver) -> HealthEndpoint:
    return HealthEndpoint("pi", receiver.url, "svc", "pw")


def _run(egress: omf.HealthEgress) -> None:
    async def go() -> None:
        await egress.cycle()
        for sender in egress.senders.values():
            await sender.close()

    asyncio.run(go())


def test_setup_then_data_is_accepted_in_order(receiver: OmfReceiver, tmp_path: Path) -> None:
    node = FakeNode("n1", (_endpoint(receiver),))
    _run(node.egress(tmp_path))
    assert [r.status for r in receiver.requests] == [202] * len(receiver.requests)
    kinds = [r.headers["messagetype"] for r in receiver.requests]
    assert kinds[:2] == ["type", "container"] and set(kinds[2:]) == {"data"}
    first = receiver.requests[0].headers
    assert first["omfversion"] == "1.2" and first["messageformat"] == "json"
    assert first["x-requested-with"] and first["authorization"].startswith("Basic ")
    names = omf.Names("n1", "plant")
    status = receiver.series(names.device_status)
    assert len(status) == 1 and status[0][1][0]["DeviceStatus"] == 0
    [(_, [diag])] = receiver.series(names.diagnostics)
    assert (
        diag["ProcessIdentifier"] > 0 and diag["ThreadCount"] >= 1 and diag["StorageTotalSize"] > 0
    )
    [(stamp, [count])] = receiver.series(names.object_count)
    assert (count["Groups"], count["Sessions"]) == (2, 3) and stamp.startswith(
        "2023-11-14T22:14:00"
    )
    [(_, [nxt])] = receiver.series(names.next_expected)
    assert nxt["NextHealthMessageExpected"] > nxt["Timestamp"]
    # The AF hierarchy: root under _ROOT, cluster service, node service, components, streams.
    targets = {json.dumps(t, sort_keys=True) for _, t in receiver.store.links}
    for container in (
        names.diagnostics,
        names.device_status,
        names.next_expected,
        names.object_count,
    ):
        assert json.dumps({"containerid": container}) in targets
    assert receiver.store.static[messages.T_ROOT] == {"ClientFailoverServices"}


def test_only_the_leader_sends_counts_and_a_leader_change_leaves_no_gap_or_duplicate(
    receiver: OmfReceiver, tmp_path: Path
) -> None:
    n1 = FakeNode("n1", (_endpoint(receiver),), leader=True)
    n2 = FakeNode("n2", (_endpoint(receiver),), leader=False)
    e1, e2 = n1.egress(tmp_path), n2.egress(tmp_path)

    async def scenario() -> None:
        for egress in (e1, e2):
            await egress.cycle()
        # Mid-slot the leader dies; n2 is elected in the same slot and sends that slot at once.
        n1.leader, n2.leader = False, True
        n2.now[0] = T0 + 30
        await e2.cycle()
        for step in (1, 2):  # the following slots come from n2 only
            n2.now[0] = T0 + step * INTERVAL
            await e2.cycle()
        for egress in (e1, e2):
            for sender in egress.senders.values():
                await sender.close()

    asyncio.run(scenario())
    series = receiver.series(omf.Names("n1", "plant").object_count)
    assert [len(values) for _, values in series] == [1, 1, 1]  # no duplicate
    stamps = [stamp for stamp, _ in series]
    assert stamps == sorted(stamps) and len(set(stamps)) == 3  # consecutive slots, no gap
    assert {"n1", "n2"} <= {_container_node(c) for c in receiver.store.containers}


def _seconds(stamp: str) -> float:
    from cfs_cluster.protocol.wire import parse_datetime, unix_from_ticks

    return round(unix_from_ticks(parse_datetime(stamp, "Timestamp")), 3)


def _container_node(container_id: str) -> str:
    return container_id.split(".")[0]


def test_unavailable_endpoint_buffers_and_honours_retry_after(
    receiver: OmfReceiver, tmp_path: Path
) -> None:
    node = FakeNode("n1", (_endpoint(receiver),))
    egress = node.egress(tmp_path)
    receiver.fail_next = [(503, {"Retry-After": "7"})]

    async def scenario() -> list[int]:
        seen = []
        await egress.cycle()  # the first post gets 503: everything stays buffered
        seen.append(len(receiver.requests))
        node.mono[0] = 6.9  # before Retry-After: nothing is sent
        await egress.cycle()
        seen.append(len(receiver.requests))
        node.mono[0] = 7.1
        await egress.cycle()
        seen.append(len(receiver.requests))
        [sender] = egress.senders.values()
        seen.append(sender.buffered)
        await sender.close()
        return seen

    first, waiting, after, buffered = asyncio.run(scenario())
    assert (first, waiting) == (1, 1)
    assert after > 1 and buffered == 0
    assert [r.status for r in receiver.requests[1:]] == [202] * (after - 1)
    assert receiver.requests[1].headers["messagetype"] == "type"  # resent from the start, in order


def test_type_conflict_logs_the_remedy_and_data_still_flows(
    receiver: OmfReceiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An older release defined the type differently: PI Web API answers 409 (spec §6.4).
    old = dict(messages.TYPES[3], description="old definition")
    receiver.store.types = {t["id"]: (old if t["id"] == old["id"] else t) for t in messages.TYPES}
    node = FakeNode("n1", (_endpoint(receiver),))
    with caplog.at_level(logging.ERROR, logger="cfs.omf"):
        _run(node.egress(tmp_path))
    assert receiver.requests[0].status == 409
    assert any("409" in r.message and "delete" in r.message.lower() for r in caplog.records)
    assert receiver.series(omf.Names("n1", "plant").device_status)


def test_wrong_credentials_are_retried_not_dropped(tmp_path: Path) -> None:
    with OmfReceiver(credentials=("svc", "right")) as receiver:
        node = FakeNode("n1", (HealthEndpoint("pi", receiver.url, "svc", "wrong"),))
        egress = node.egress(tmp_path)
        _run(egress)
        assert [r.status for r in receiver.requests] == [401]


def test_large_bodies_are_split_below_192_kb(receiver: OmfReceiver, tmp_path: Path) -> None:
    names = omf.Names("n1", "plant")
    big = omf.Message(
        "data",
        "create",
        tuple(
            {
                "containerid": names.device_status,
                "values": [
                    {"Timestamp": f"2024-01-01T00:00:{i % 60:02d}.{i:07d}Z", "DeviceStatus": 0}
                ],
            }
            for i in range(4000)
        ),
    )
    parts = omf.split_message(big)
    assert len(parts) > 1 and all(len(p.encode()) <= messages.MAX_BODY_BYTES for p in parts)
    assert sum(len(p.body) for p in parts) == 4000
    node = FakeNode("n1", (_endpoint(receiver),))
    egress = node.egress(tmp_path)

    async def scenario() -> None:
        await egress.cycle()
        [sender] = egress.senders.values()
        sender.enqueue(big)
        await sender.flush()
        await sender.close()

    asyncio.run(scenario())
    assert all(r.status == 202 for r in receiver.requests)
    assert len(receiver.series(names.device_status)) > 1


@pytest.mark.cluster
def test_three_nodes_report_to_one_receiver_through_a_leader_kill(tmp_path: Path) -> None:
    with (
        OmfReceiver() as receiver,
        Cluster(
            tmp_path, size=3, extra_args=["--health-interval", "2", "--cluster-name", "plant"]
        ) as cluster,
    ):
        api = "/api/v1/clientfailover"
        base = cluster.nodes[0].url
        for group in ("g1", "g2"):
            assert (
                cluster.client.post(
                    f"{base}{api}/groups", json={"Id": group, "FailoverTimeout": "00:00:10"}
                ).status_code
                == 201
            )
        for session in ("a", "b", "c"):
            url = f"{base}{api}/groups/g1/clientsessions"
            assert cluster.client.post(url, json={"Id": session}).status_code == 201
        endpoint = {"Id": "pi", "Endpoint": receiver.url}
        assert (
            cluster.client.post(
                base + "/api/v1/configuration/healthEndpoints", json=endpoint
            ).status_code
            == 201
        )
        count = omf.Names("x", "plant").object_count

        def counts_ok(r: OmfReceiver) -> bool:
            values = r.store.values.get(count, {})
            return bool(values) and all(
                v[-1]["Groups"] == 2 and v[-1]["Sessions"] == 3 for v in values.values()
            )

        def all_nodes(r: OmfReceiver) -> bool:
            return all(
                omf.Names(n, "plant").diagnostics in r.store.values for n in ("n1", "n2", "n3")
            )

        assert receiver.wait_for(lambda r: counts_ok(r) and all_nodes(r), 15)
        assert all(r.status == 202 for r in receiver.requests), [
            r.status for r in receiver.requests
        ]
        leader = cluster.leader_index()
        cluster.nodes[leader].kill()
        before = len(receiver.series(count))
        new_leader = cluster.leader_index(exclude={leader})
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(receiver.series(count)) < before + 2:
            time.sleep(0.1)
        series = receiver.series(count)
        assert len(series) >= before + 2, (before, len(series))
        assert all(len(values) == 1 for _, values in series)  # never two values for one slot
        seconds = [_seconds(stamp) for stamp, _ in series]
        gaps = [b - a for a, b in zip(seconds, seconds[1:], strict=False)]
        # No gap: a new leader is elected well within one 2 s slot and sends the current one.
        assert gaps and all(g == 2.0 for g in gaps), gaps
        assert all(v[0]["Groups"] == 2 and v[0]["Sessions"] == 3 for _, v in series)
        assert all(r.status == 202 for r in receiver.requests)
        assert new_leader != leader
