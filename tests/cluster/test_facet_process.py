"""Persistence and restart of a real `cfs facet` process (spec §5.7; issue 19).

``System_FailoverState`` is saved on every role or score change with AdapterState Running, and
with Shutdown at a graceful stop. At start: after an ungraceful stop (SIGKILL: the file still
says Running) the adapter starts as Secondary with the saved LastDataProcessedTime; after a
graceful one (SIGTERM) it restores the saved role. The restarts point the configuration at an
endpoint where nothing listens, so what the facet reports is what it restored, not what a
first heartbeat answered: a restored Cold *Primary* scores as a Primary ("100"), a Cold
Secondary is on standby ("1"). Neither acts as Primary without a grant (P1).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.clusterkit import Cluster, free_ports

from cfs_cluster.facet.store import CONFIG_FILE, STATE_FILE

pytestmark = pytest.mark.cluster

CONFIG = "/api/v1/configuration/System/ClientFailover"
STATE = "/api/v1/diagnostics/FailoverState"
NOWHERE = "http://127.0.0.1:9/api/v1/clientfailover"


class FacetProcess:
    """``cfs facet`` on a free port, stopped by PID."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "cfs_cluster", "facet", "--port", str(self.port),
               "--data-dir", str(self.data_dir)]  # fmt: skip
        with (self.data_dir.parent / f"{self.data_dir.name}.log").open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + STATE, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("cfs facet did not start")

    def stop(self, sig: signal.Signals) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=20)

    def terminate(self) -> None:
        """SIGTERM: uvicorn runs the shutdown (the facet unregisters and saves Shutdown) and
        then exits by the same signal."""
        assert self.stop(signal.SIGTERM) in (0, -signal.SIGTERM)

    def state(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(self.url + STATE, timeout=5).json()
        return body

    def saved(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads((self.data_dir / STATE_FILE).read_text())
        return body

    def point_at(self, endpoint: str) -> None:
        """Edit the stored configuration while the process is down."""
        path = self.data_dir / CONFIG_FILE
        [config] = json.loads(path.read_text())
        path.write_text(json.dumps([{**config, "Endpoint": endpoint}]))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("facet-process")) as running:
        yield running


@pytest.fixture
def facet(tmp_path: Path) -> Iterator[FacetProcess]:
    process = FacetProcess(tmp_path / "facet")
    try:
        yield process
    finally:
        if process.proc is not None and process.proc.poll() is None:
            process.stop(signal.SIGKILL)


def _until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _configure_cold_primary(cluster: Cluster, facet: FacetProcess, group: str) -> None:
    facet.start()
    config = {"FailoverGroupId": group, "Mode": "cold", "FailoverTimeout": "00:00:15",
              "Endpoint": cluster.nodes[0].url + "/api/v1/clientfailover"}  # fmt: skip
    assert httpx.put(facet.url + CONFIG, json=[config], timeout=5).status_code == 200
    _until(lambda: facet.state()["Role"] == "Primary", 15, "the only adapter to be Primary")
    # Saved at the role change, then again when the next heartbeat scores it as a Primary.
    _until(lambda: facet.saved()["FailoverScore"] == 100.0, 15, "the primary score saved")
    saved = facet.saved()
    assert (saved["Role"], saved["AdapterState"]) == ("Primary", "Running")


def test_after_sigkill_it_starts_as_secondary_with_the_saved_time(
    cluster: Cluster, facet: FacetProcess
) -> None:
    _configure_cold_primary(cluster, facet, "KilledFacet")
    assert facet.stop(signal.SIGKILL) == -signal.SIGKILL
    saved = facet.saved()
    assert (saved["Role"], saved["AdapterState"]) == ("Primary", "Running")  # ungraceful
    saved["LastDataProcessedTime"] = "2024-05-06T07:08:09.0000000Z"
    (facet.data_dir / STATE_FILE).write_text(json.dumps(saved))
    facet.point_at(NOWHERE)
    facet.start()
    _until(lambda: facet.state()["EndpointStatus"] == "Unreachable", 15, "the first attempt")
    state = facet.state()
    assert (state["Role"], state["FailoverStatus"]) == ("Secondary", "1")  # cold standby
    assert state["LastDataProcessedTime"] == "2024-05-06T07:08:09"
    assert facet.saved()["AdapterState"] == "Running"
    facet.terminate()


def test_after_sigterm_it_restores_the_saved_role(cluster: Cluster, facet: FacetProcess) -> None:
    group = "StoppedFacet"
    _configure_cold_primary(cluster, facet, group)
    facet.terminate()
    saved = facet.saved()
    assert (saved["Role"], saved["AdapterState"]) == ("Primary", "Shutdown")  # graceful
    sessions = f"{cluster.nodes[1].url}/api/v1/clientfailover/groups/{group}/clientsessions"
    assert httpx.get(sessions, timeout=5).json() == []  # the graceful stop unregistered

    facet.point_at(NOWHERE)
    facet.start()
    _until(lambda: facet.state()["EndpointStatus"] == "Unreachable", 15, "the first attempt")
    state = facet.state()
    # Restored as Primary: it scores as one (not cold standby), but without a grant from the
    # cluster it does not act as one.
    assert (state["Role"], state["FailoverStatus"]) == ("Secondary", "100")
    facet.terminate()

    facet.point_at(cluster.nodes[2].url + "/api/v1/clientfailover")
    facet.start()
    _until(lambda: facet.state()["Role"] == "Primary", 15, "the cluster to confirm Primary")
    facet.terminate()
