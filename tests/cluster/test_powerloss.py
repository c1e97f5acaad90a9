"""Power loss under a real 3-node cluster: each node's data directory on tests/support/lazyfs.py, a FUSE
file system that forgets every write not synced when told "powerloss".

A power loss here is `kill -9` of the node and then the loss of its unsynced writes. Asserts:
every write acknowledged before it is there afterwards, on every node, and no node voted for
two candidates in one term (each vote is logged once it is synced). The long variant (several
rounds of losing every node's power) runs under `make chaos`.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.clusterkit import Cluster

pytestmark = pytest.mark.cluster

API = "/api/v1/clientfailover"
LAZYFS = Path(__file__).parent.parent / "support" / "lazyfs.py"


class LazyMount:
    def __init__(self, base: Path, name: str) -> None:
        self.path = base / f"{name}-fs"
        self.control = str(base / f"{name}.ctl")
        self.log = base / f"{name}-fs.log"
        self.path.mkdir()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(LAZYFS), str(self.path), self.control],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while not (os.path.ismount(self.path) and os.path.exists(self.control)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.unmount()
                pytest.skip(f"cannot mount the FUSE test file system: {self.log.read_text()[-500:]}")  # fmt: skip
            time.sleep(0.05)

    def power_loss(self) -> None:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(self.control)
            conn.sendall(b"powerloss\n")
            assert conn.recv(16) == b"ok\n"

    def unmount(self) -> None:
        subprocess.run(["fusermount3", "-u", str(self.path)], capture_output=True, check=False)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def lazy_cluster(tmp_path: Path) -> Iterator[tuple[Cluster, list[LazyMount]]]:
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse") or not shutil.which("fusermount3"):
        pytest.skip("needs root, /dev/fuse and fusermount3 (Debian fuse3)")
    pytest.importorskip("mfusepy", reason="needs mfusepy (pip install -e '.[test]')")
    cluster = Cluster(tmp_path)
    mounts: list[LazyMount] = []
    try:
        for node in cluster.nodes:
            mounts.append(LazyMount(tmp_path, node.node_id))
            node.data_dir = mounts[-1].path
        with cluster:
            yield cluster, mounts
    finally:
        for mount in mounts:
            mount.unmount()


class Writer:
    """Creates groups one after another through any node; remembers those acknowledged."""

    def __init__(self, cluster: Cluster) -> None:
        self.urls = cluster.urls
        self.acknowledged: list[str] = []
        self.answers: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        target, i = 0, 0
        with httpx.Client(timeout=3) as client:
            while not self._stop.is_set():
                name = f"w{i}"
                try:
                    response = client.post(
                        f"{self.urls[target]}{API}/groups",
                        json={"Id": name, "FailoverTimeout": "00:00:30"},
                    )
                except httpx.HTTPError:
                    target = (target + 1) % len(self.urls)
                    time.sleep(0.05)
                    continue
                self.answers[response.status_code] = self.answers.get(response.status_code, 0) + 1
                if response.status_code == 201:
                    self.acknowledged.append(name)
                else:
                    target = (target + 1) % len(self.urls)
                    time.sleep(0.05)
                i += 1

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acknowledged) < count:
            assert time.monotonic() < deadline, f"writes stalled: {self.answers}"
            time.sleep(0.05)

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(timeout=10)
        return list(self.acknowledged)


def power_loss(cluster: Cluster, mounts: list[LazyMount], indexes: list[int]) -> None:
    for i in indexes:
        cluster.nodes[i].kill()
    for i in indexes:
        mounts[i].power_loss()
    for i in indexes:
        cluster.nodes[i].start()


def assert_all_present(cluster: Cluster, acknowledged: list[str]) -> None:
    cluster.wait_ready(timeout=60)
    for node in cluster.nodes:
        deadline = time.monotonic() + 20
        while True:
            groups = {g["Id"] for g in cluster.client.get(f"{node.url}{API}/groups").json()}
            missing = set(acknowledged) - groups
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert not missing, f"{node.node_id} lost {len(missing)} acknowledged writes: {sorted(missing)[:10]}"  # fmt: skip


def assert_one_vote_per_term(cluster: Cluster) -> None:
    for node in cluster.nodes:
        votes: dict[int, set[str]] = {}
        for term, candidate in re.findall(r"Raft term (\d+): voted for (\S+) \(synced\)", node.log_path.read_text()):  # fmt: skip
            votes.setdefault(int(term), set()).add(candidate)
        twice = {term: sorted(c) for term, c in votes.items() if len(c) > 1}
        assert not twice, f"{node.node_id} voted twice in a term: {twice}"


def test_power_loss_of_the_leader_mid_write_loses_nothing_acknowledged(
    lazy_cluster: tuple[Cluster, list[LazyMount]],
) -> None:
    cluster, mounts = lazy_cluster
    writer = Writer(cluster)
    writer.wait_for(20)
    power_loss(cluster, mounts, [cluster.leader_index()])
    writer.wait_for(len(writer.acknowledged) + 20)
    acknowledged = writer.stop()
    assert_all_present(cluster, acknowledged)
    assert_one_vote_per_term(cluster)


@pytest.mark.parametrize("rounds", [pytest.param(1, id="once"), pytest.param(5, id="5-rounds", marks=pytest.mark.chaos)])  # fmt: skip
def test_power_loss_of_every_node_mid_write_loses_nothing_acknowledged(
    lazy_cluster: tuple[Cluster, list[LazyMount]], rounds: int
) -> None:
    cluster, mounts = lazy_cluster
    writer = Writer(cluster)
    for _ in range(rounds):
        writer.wait_for(len(writer.acknowledged) + 20)
        power_loss(cluster, mounts, list(range(len(cluster.nodes))))
    writer.wait_for(len(writer.acknowledged) + 5)
    acknowledged = writer.stop()
    assert_all_present(cluster, acknowledged)
    assert_one_vote_per_term(cluster)
