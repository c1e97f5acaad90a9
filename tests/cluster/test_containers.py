"""The compose cluster in real containers (issue 20): faults through the Docker SDK.

Each test starts its own compose project (compose/docker-compose.yml, images built without a
registry by compose/cluster.sh) with `--auth required`, a Raft password and a bootstrap
administrator, then heartbeats adapters *through HAProxy* from the host while a fault hits the
cluster: the Raft leader's container killed, paused, cut off its network; a rolling image
upgrade; a full `compose down`/`up`; a node alive but unready. Every heartbeat is recorded and
checked by tests/history.py for P1-P4 (design.md). The failed-heartbeat windows are printed
(`-s`) and recorded as test properties; only correctness is asserted, never a timing target.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from support.history import (
    PRIMARY,
    Fleet,
    History,
    failed_seconds,
    missing_creates,
    p1_violations,
    primaries_at,
    promotion_delay,
    role_changes,
    server_errors,
)

dockerkit = pytest.importorskip(
    "support.dockerkit", reason="the Docker SDK is missing (pip install -e '.[test]')"
)
ComposeCluster = dockerkit.ComposeCluster

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

T = 4.0  # FailoverTimeout: adapters heartbeat every T/2
GROUPS = [f"g{i}" for i in range(3)]
SESSIONS = ["a", "b"]
ADAPTER = ("plc", "adapter-password-for-tests")
GROUPS_API = "/api/v1/clientfailover/groups"
FAULT_SECONDS = 3.0
RecordProperty = Callable[
    [str, object], None
]  # how long a paused or cut-off leader stays so (the fault's length)


def _skip_reason() -> str | None:
    if dockerkit.engine() is None:
        return "no Docker engine answers (set DOCKER_HOST or start dockerd)"
    if dockerkit.compose_command() is None:
        return "neither `docker compose` nor `docker-compose` is installed"
    cache = Path(os.environ.get("CFS_IMAGE_CACHE", Path.home() / ".cache" / "cfs-images"))
    cached = any(cache.glob("*.tar")) or any(
        img.tags for img in dockerkit.engine().images.list(name="cfs-base")
    )
    can_build = shutil.which("debootstrap") is not None and os.geteuid() == 0
    if not (cached or can_build or os.environ.get("CFS_BASE_IMAGE")):
        return "no cached base image and debootstrap cannot run (needs root + apt-get install debootstrap)"
    return None


SKIP = _skip_reason()
if SKIP:
    pytest.skip(SKIP, allow_module_level=True)


@pytest.fixture(scope="module")
def images() -> None:
    seconds = dockerkit.build_images(dockerkit.NODE_IMAGE, dockerkit.HAPROXY_IMAGE, "pytest")
    print(f"\n[images] node + HAProxy images ready in {seconds:.1f} s")


@pytest.fixture
def cluster(images: None, tmp_path: Path) -> Iterator[ComposeCluster]:
    client = dockerkit.engine()
    assert client is not None
    compose = dockerkit.compose_command()
    assert compose is not None
    with ComposeCluster(client, compose, tmp_path) as running:
        running.up()
        running.wait_ready()
        _add_adapter_user(running)
        yield running


def _add_adapter_user(cluster: ComposeCluster) -> None:
    """The bootstrap administrator (from the compose env) creates the adapters' account."""
    body = {"Name": ADAPTER[0], "Password": ADAPTER[1], "Role": "users"}
    deadline = time.monotonic() + 30
    while True:  # the bootstrap admin is applied through Raft shortly after the first leader
        response = cluster.http.post(cluster.front + "/api/v1/users", json=body)
        if response.status_code == 201:
            return
        assert response.status_code == 401 and time.monotonic() < deadline, response.text
        time.sleep(0.2)


def _create(cluster: ComposeCluster, history: History) -> None:
    with httpx.Client(timeout=5, auth=ADAPTER) as client:
        for group in GROUPS:
            body = {"Id": group, "FailoverTimeout": f"00:00:0{int(T)}"}
            response = client.post(cluster.front + GROUPS_API, json=body)
            assert response.status_code == 201, response.text
            history.creates.append((group, None))
            for session in SESSIONS:
                url = cluster.front + f"{GROUPS_API}/{group}/clientsessions"
                response = client.post(url, json={"Id": session})
                assert response.status_code == 201, response.text
                history.creates.append((group, session))


def _wait_stable(history: History, timeout: float = 20.0) -> float:
    """Every group has exactly one Primary and every adapter two answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.monotonic()
        records = history.snapshot()
        primaries = primaries_at(records, now)
        answers = {(g, s): 0 for g in GROUPS for s in SESSIONS}
        for record in records:
            if record.ok:
                answers[record.key] += 1
        if min(answers.values()) >= 2 and all(len(primaries.get(g, ())) == 1 for g in GROUPS):
            return now
        time.sleep(0.1)
    raise AssertionError(
        f"groups never settled: {primaries_at(history.snapshot(), time.monotonic())}"
    )


def _promote_after_crash(fleet: Fleet, history: History) -> tuple[float, float | None]:
    """P3: stop g0's primary adapter; returns (stop time, promotion delay of the other)."""
    group = GROUPS[0]
    (primary,) = primaries_at(history.snapshot(), time.monotonic())[group]
    (secondary,) = set(SESSIONS) - {primary}
    stopped = fleet.crash(group, primary)
    deadline = time.monotonic() + 3 * T + 2
    while time.monotonic() < deadline:
        records = history.of((group, secondary))
        if any(r.ok and r.role == PRIMARY and r.sent > stopped for r in records):
            break
        time.sleep(0.05)
    return stopped, promotion_delay(history.snapshot(), group, primary, stopped)


def _run(
    cluster: ComposeCluster,
    name: str,
    fault: Callable[[ComposeCluster], tuple[str, ...]],
    record_property: RecordProperty,
    expect_role_changes: bool = False,
) -> History:
    """Adapters and a writer heartbeat through HAProxy across ``fault``, which returns the
    nodes still serving; then P3 on group g0; then P1-P4 over the whole history."""
    history = History()
    _create(cluster, history)
    with Fleet([cluster.front], history, timeout=1.0, auth=ADAPTER) as fleet:
        for i, group in enumerate(GROUPS):
            for j, session in enumerate(SESSIONS):
                fleet.add(group, session, T / 2, offset=i + j)
        _wait_stable(history)
        fleet.add_writer("w", 0.5)
        since = time.monotonic()
        serving = fault(cluster)
        cluster.wait_ready(serving)
        time.sleep(T)  # adapters run on after the fault; the history is the measurement
        fault_end = time.monotonic()
        stopped, delay = _promote_after_crash(fleet, history)
    records = history.snapshot()
    window = failed_seconds([r for r in records if r.sent < fault_end], since)
    failed = sum(1 for r in records if since <= r.sent < fault_end and not r.ok)
    print(
        f"\n[{name}] heartbeats {sum(1 for r in records if r.sent >= since)}, failed {failed}, "
        f"failed-heartbeat window {window:.2f} s (target 3 s), promotion after a primary "
        f"adapter stopped {delay} s, acknowledged creates {len(history.creates)}"
    )
    record_property("failed_heartbeat_window_s", round(window, 3))
    record_property("promotion_delay_s", delay)

    violations = p1_violations(records)
    assert not violations, "P1:\n" + "\n".join(map(str, violations))
    if not expect_role_changes:
        before_crash = [r for r in records if r.group != GROUPS[0] or r.sent < stopped]
        changes = role_changes(before_crash, since)
        assert not changes, "P2 role changes:\n" + "\n".join(changes)
    assert delay is not None, (
        f"P3: g0's secondary never promoted: {history.of((GROUPS[0], 'a'))[-3:]}"
    )
    assert delay <= T + T / 2 + 1, f"P3: promotion took {delay:.2f} s"
    errors = server_errors(records)
    assert not errors, f"answers no fault may cause: {errors[:5]}"
    serving_urls = [cluster.node_url(n) for n in serving]
    missing = missing_creates(history, serving_urls, auth=ADAPTER)
    assert not missing, f"P4: acknowledged creates missing: {missing[:10]}"
    return history


def _others(name: str) -> tuple[str, ...]:
    return tuple(n for n in dockerkit.NODES if n != name)


def test_leader_container_killed(cluster: ComposeCluster, record_property: RecordProperty) -> None:
    def kill_leader(c: ComposeCluster) -> tuple[str, ...]:
        leader = c.leader()
        c.container(leader).kill()  # SIGKILL: a power cut
        c.leader(exclude={leader})
        return _others(leader)

    _run(cluster, "leader container killed", kill_leader, record_property)


def test_leader_container_paused(cluster: ComposeCluster, record_property: RecordProperty) -> None:
    def pause_leader(c: ComposeCluster) -> tuple[str, ...]:
        leader = c.leader()
        container = c.container(leader)
        resume_at = time.monotonic() + FAULT_SECONDS
        container.pause()  # the cgroup freezer: the process stops, its sockets stay open
        try:
            c.leader(exclude={leader})
            time.sleep(max(0.0, resume_at - time.monotonic()))
        finally:
            container.unpause()
        return dockerkit.NODES

    _run(cluster, "leader container paused 3 s", pause_leader, record_property)


def test_leader_container_cut_off(cluster: ComposeCluster, record_property: RecordProperty) -> None:
    def cut_leader(c: ComposeCluster) -> tuple[str, ...]:
        leader = c.leader()
        container = c.container(leader)
        network = c.network()
        endpoint = container.attrs["NetworkSettings"]["Networks"][network.name]
        address = endpoint["IPAMConfig"]["IPv4Address"]
        aliases = [a for a in endpoint.get("Aliases") or [] if a != container.id[:12]]
        resume_at = time.monotonic() + FAULT_SECONDS
        network.disconnect(container)
        try:
            c.leader(exclude={leader})
            time.sleep(max(0.0, resume_at - time.monotonic()))
        finally:  # back with the same address and DNS name: peers cache the address
            network.connect(container, ipv4_address=address, aliases=aliases or [leader])
        return dockerkit.NODES

    _run(cluster, "leader container cut off 3 s", cut_leader, record_property)


def test_rolling_image_upgrade_changes_no_role(
    cluster: ComposeCluster, record_property: RecordProperty
) -> None:
    """A new image (rebuilt with another revision label), one container recreated at a time,
    the leader last: compose stops each with SIGTERM, the node drains (/readyz 503, leadership
    handed over, serving on for --drain-seconds) and HAProxy moves traffic before it exits."""
    upgraded = f"cfs-cluster:pytest-upgrade-{cluster.project}"
    new_id = ""

    def upgrade(c: ComposeCluster) -> tuple[str, ...]:
        nonlocal new_id
        c.run(
            "build", "-q", "--build-arg", f"CFS_REVISION={c.project}", "cfs1", node_image=upgraded
        )
        new_id = c.client.images.get(upgraded).id
        leader = c.leader()
        for name in (*_others(leader), leader):
            c.up("--no-deps", name, node_image=upgraded)
            c.wait_ready((name,))
            assert c.container(name).image.id == new_id, f"{name} was not recreated"
        return dockerkit.NODES

    try:
        _run(cluster, "rolling image upgrade", upgrade, record_property)
        assert {c.image.id for n, c in cluster.containers().items() if n != "haproxy"} == {new_id}
    finally:
        cluster.close()  # the containers first, then the image they ran
        cluster.client.images.remove(upgraded, force=True)


def test_compose_down_up_keeps_volumes_and_every_group(
    cluster: ComposeCluster, record_property: RecordProperty
) -> None:
    def down_up(c: ComposeCluster) -> tuple[str, ...]:
        volumes = c.volumes()
        assert len(volumes) == 3, volumes
        c.down()
        assert c.containers() == {}, "compose down left containers"
        assert c.volumes() == volumes, "compose down must keep the named volumes"
        c.up()
        return dockerkit.NODES

    _run(cluster, "compose down + up", down_up, record_property)


def test_haproxy_takes_an_alive_unready_node_out(
    cluster: ComposeCluster, record_property: RecordProperty
) -> None:
    """Two nodes paused: the third is alive but has no quorum, so its /readyz answers 503 and
    HAProxy takes it out on the HTTP status (L7STS), not on a dead socket; the front answers
    503. After the pause every node is back in rotation."""

    def lose_quorum(c: ComposeCluster) -> tuple[str, ...]:
        alive = c.leader()
        paused = [c.container(n) for n in _others(alive)]
        for container in paused:
            container.pause()
        try:
            states = c.wait_haproxy(dict.fromkeys(dockerkit.NODES, "DOWN"))
            assert states[alive][1] == "L7STS", states  # it answered: 503
            for name in _others(alive):  # frozen: the check timed out
                assert states[name][1] in ("L4TOUT", "L7TOUT"), states
            assert c.http.get(c.front + "/api/v1/cluster").status_code == 503
        finally:
            for container in paused:
                container.unpause()
        c.wait_haproxy(dict.fromkeys(dockerkit.NODES, "UP"))
        return dockerkit.NODES

    # Heartbeats fail while no node can serve: roles may then move (P2 is owed only while a
    # majority lives); P1, P3 and P4 must still hold.
    _run(cluster, "no quorum, HAProxy drops the unready node", lose_quorum, record_property,
         expect_role_changes=True)  # fmt: skip
