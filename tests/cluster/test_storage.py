"""Real `cfs serve` processes on real storage faults: a damaged journal at restart, an apply that
fails, a full disk, and the syncs a leader makes (counted under strace).

Power loss (unsynced writes discarded by a FUSE layer) is in tests/cluster/test_powerloss.py; the
journal's own checks at unit level in tests/unit/test_journal.py.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import struct
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.clusterkit import Cluster

pytestmark = pytest.mark.cluster

API = "/api/v1/clientfailover"
HEADER, RECORD = 16, struct.Struct("<4sIIQQ")
EXIT_STORAGE_CORRUPT, EXIT_APPLY_FAILED = 65, 70


def create_group(client: httpx.Client, url: str, group: str) -> httpx.Response:
    return client.post(f"{url}{API}/groups", json={"Id": group, "FailoverTimeout": "00:00:30"})


def groups_on(client: httpx.Client, url: str) -> set[str]:
    response = client.get(f"{url}{API}/groups")
    assert response.status_code == 200, response.text
    return {g["Id"] for g in response.json()}


def write_groups(cluster: Cluster, names: list[str]) -> None:
    """Through the leader (a stopped node is never asked)."""
    url = cluster.urls[cluster.leader_index()]
    for name in names:
        response = create_group(cluster.client, url, name)
        assert response.status_code == 201, response.text


def follower_of(cluster: Cluster) -> int:
    leader = cluster.leader_index()
    return next(i for i in range(len(cluster.nodes)) if i != leader)


def wait_exit(cluster: Cluster, index: int, timeout: float = 30) -> int:
    proc = cluster.nodes[index].proc
    assert proc is not None
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"node {index} neither recovered nor exited: {cluster.tail_log(index)}")


def records(path: Path) -> list[tuple[int, int]]:
    """(offset, end) of every record in a cfs journal."""
    data, spans, offset = path.read_bytes(), [], HEADER
    while offset < len(data):
        length = RECORD.unpack_from(data, offset)[1]
        spans.append((offset, offset + RECORD.size + length))
        offset += RECORD.size + length
    return spans


# --------------------------------------------------------------------------- damaged journals


@pytest.mark.parametrize("damage", ["torn", "flipped"])
def test_a_follower_restarted_on_a_damaged_tail_cuts_it_and_catches_up(
    tmp_path: Path, damage: str
) -> None:
    rng = random.Random(damage)
    with Cluster(tmp_path) as cluster:
        write_groups(cluster, [f"g{i}" for i in range(10)])
        index = follower_of(cluster)
        cluster.wait_ready(nodes=[index])
        node = cluster.nodes[index]
        node.kill()
        path = node.data_dir / "raft.journal"
        start, end = records(path)[-1]
        data = bytearray(path.read_bytes())
        if damage == "torn":
            del data[rng.randrange(start + 1, end) :]
        else:
            data[rng.randrange(start, end)] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        write_groups(cluster, ["after"])  # the follower must fetch this from the leader
        node.start()
        cluster.wait_ready(nodes=[index], timeout=30)
        assert groups_on(cluster.client, node.url) == {f"g{i}" for i in range(10)} | {"after"}
        log = node.log_path.read_text()
        assert f"{path}: dropped a torn or corrupt tail" in log


def test_damage_before_the_tail_stops_the_node_with_what_to_do(tmp_path: Path) -> None:
    """pysyncobj's journal loaded such a file and ran without ever getting ready (a payload
    byte it could not unpickle was retried forever)."""
    with Cluster(tmp_path) as cluster:
        write_groups(cluster, [f"g{i}" for i in range(10)])
        index = follower_of(cluster)
        cluster.wait_ready(nodes=[index])
        node = cluster.nodes[index]
        node.kill()
        path = node.data_dir / "raft.journal"
        data = bytearray(path.read_bytes())
        middle = len(data) // 2
        data[middle] ^= 0x10
        path.write_bytes(bytes(data))
        node.start()
        assert wait_exit(cluster, index) == EXIT_STORAGE_CORRUPT
        log = node.log_path.read_text()
        assert f"Refusing to start: {path}" in log and "intact records follow" in log
        assert "Restoring one node from its peers" in log and "Traceback" not in log
        # The documented procedure: move the data directory aside, start empty, catch up.
        node.data_dir.rename(node.data_dir.with_name("n-damaged"))
        node.start()
        cluster.wait_ready(nodes=[index], timeout=30)
        assert groups_on(cluster.client, node.url) == {f"g{i}" for i in range(10)}


def test_an_entry_that_cannot_be_applied_stops_the_node_instead_of_a_retry_loop(
    tmp_path: Path,
) -> None:
    with Cluster(tmp_path, size=1) as cluster:
        write_groups(cluster, ["g1"])
        node = cluster.nodes[0]
        node.terminate()
        path = node.data_dir / "raft.journal"
        data = path.read_bytes()
        start, _end = records(path)[-1]
        _mark, _length, _crc, index, term = RECORD.unpack_from(data, start)
        # A checksummed record whose command cannot be unpickled: only a bug writes that.
        command = b"\x00not a pickle"
        crc = zlib.crc32(command, zlib.crc32(struct.pack("<IQQ", len(command), index + 1, term)))
        with path.open("ab") as f:
            f.write(RECORD.pack(b"\xc5\xf5\x10\x9e", len(command), crc, index + 1, term) + command)
        node.start()
        assert wait_exit(cluster, 0) == EXIT_APPLY_FAILED
        log = node.log_path.read_text()
        assert f"Applying Raft entry {index + 1} failed" in log
        assert "restore this node from its peers" in log


# --------------------------------------------------------------------------- a full disk


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\xff" * 4096) > 0:
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_refuses_writes_keeps_heartbeats_and_recovers(
    tmp_path: Path, tiny_tmpfs: Path
) -> None:
    """pysyncobj's mmap journal died of SIGBUS (exit 135) on the third write here."""
    cluster = Cluster(tmp_path, size=1)
    node = cluster.nodes[0]
    node.data_dir = tiny_tmpfs / "data"
    with cluster:
        client, url = cluster.client, node.url
        assert create_group(client, url, "g1").status_code == 201
        session = f"{url}{API}/groups/g1/clientsessions"
        assert client.post(session, json={"Id": "a"}).status_code == 201
        beat = f"{session}/a/heartbeat"
        assert client.post(beat, json={"FailoverScore": 5}).json()["Role"] == 1
        filler = fill(tiny_tmpfs)

        # The journal's last page may still hold a few records; then every write is refused.
        accepted = 0
        while create_group(client, url, f"fits{accepted}").status_code == 201:
            accepted += 1
            assert accepted < 200, "writes never refused on a full disk"
        refused = [create_group(client, url, f"full{i}") for i in range(5)]
        for response in refused:
            assert response.status_code == 503, response.text
            body = response.json()
            assert body["Error"] == "The write cannot be stored." and "Retry-After" in response.headers  # fmt: skip
            assert "No space left on device" in body["Reason"]
        assert node.alive
        assert client.post(beat, json={"FailoverScore": 5}).json()["Role"] == 1
        ready = client.get(f"{url}/readyz")
        assert ready.status_code == 200 and "writes are refused" in ready.json()["Reason"]
        metrics = client.get(f"{url}/metrics").text
        assert re.search(r"^cfs_storage_writable 0\.0$", metrics, re.M)
        assert "Storage: cannot write raft.journal" in node.log_path.read_text()

        filler.unlink()
        deadline = time.monotonic() + 15
        while (answer := create_group(client, url, "after")).status_code != 201:
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.2)
        assert groups_on(client, url) == {"g1", "after"} | {f"fits{i}" for i in range(accepted)}
        assert "writable again" in node.log_path.read_text()
        assert re.search(r"^cfs_storage_writable 1\.0$", client.get(f"{url}/metrics").text, re.M)


# --------------------------------------------------------------------------- syncs counted


def test_the_leader_syncs_before_it_acknowledges_each_write(tmp_path: Path) -> None:
    """strace on the leader during 100 sequential acknowledged writes: at least one fsync or
    fdatasync each (pysyncobj's journal made none)."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    with Cluster(tmp_path) as cluster:
        leader = cluster.nodes[cluster.leader_index()]
        assert leader.proc is not None
        trace, messages = tmp_path / "strace.out", tmp_path / "strace.err"
        with messages.open("w") as err:
            tracer = subprocess.Popen(
                ["strace", "-f", "-e", "trace=fsync,fdatasync,msync,sync_file_range",
                 "-o", str(trace), "-p", str(leader.proc.pid)],
                stderr=err,
            )  # fmt: skip
        try:
            _wait_attached(tracer, messages)
            for i in range(100):
                response = create_group(cluster.client, leader.url, f"g{i}")
                assert response.status_code == 201, response.text
        finally:
            tracer.terminate()
            tracer.wait(timeout=10)
        syncs = [line for line in trace.read_text().splitlines() if "sync(" in line]
        assert len(syncs) >= 100, f"{len(syncs)} sync calls for 100 acknowledged writes"


def _wait_attached(tracer: subprocess.Popen[bytes], messages: Path) -> None:
    """Until strace says it attached (to a file: a full pipe would stall the traced node)."""
    deadline = time.monotonic() + 10
    while "attached" not in messages.read_text():
        if tracer.poll() is not None:
            pytest.skip(f"strace cannot attach here: {messages.read_text().strip()}")
        assert time.monotonic() < deadline, "strace did not attach"
        time.sleep(0.02)
