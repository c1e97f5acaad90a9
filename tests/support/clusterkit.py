"""Test harness: real `cfs serve` processes, started and stopped by PID.

Nodes on 127.0.0.1 run `serve --dev` (loopback only, no Raft password, open unless the test
gives CFS_BOOTSTRAP_ADMIN). Nodes placed on other addresses (network namespaces,
tests/netkit.py) run as on a real network: a Raft password and a bootstrap administrator
generated for the cluster, whose credentials ``Cluster.auth`` carries (``Cluster.client``
sends them).

Ports are picked at random below 32768 (ephemeral ports can self-connect, see
research/probe-notes.md) and checked free, so several suites can run side by side.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

PORT_RANGE = (20000, 32000)
# The administrator of clusters placed beyond loopback (its password is made per cluster).
NETWORK_ADMIN = "harness-admin"


def is_loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.")


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that are free right now."""
    ports: list[int] = []
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(count * 200):
        port = rng.randrange(*PORT_RANGE)
        if port in ports:
            continue
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError("no free ports")


@dataclass
class NodeProcess:
    node_id: str
    api_port: int
    raft_port: int
    data_dir: Path
    log_path: Path
    peers: list[str]
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"
    netns: str | None = None  # run inside this network namespace (tests/support/netkit.py)
    scheme: str = "http"  # "https" when started with --tls
    dev: bool = True  # `serve --dev`: loopback only

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.api_port}"

    @property
    def raft(self) -> str:
        return f"{self.host}:{self.raft_port}"

    def start(self) -> None:
        # `ip netns exec` execs the command, so the PID stays the node's own.
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        cmd = [
            *prefix, sys.executable, "-m", "cfs_cluster", "serve",
            *(["--dev"] if self.dev else []),
            "--node-id", self.node_id,
            "--api", f"{self.host}:{self.api_port}",
            "--raft", self.raft,
            "--peers", ",".join(self.peers),
            "--data-dir", str(self.data_dir),
            *self.extra_args,
        ]  # fmt: skip
        log = self.log_path.open("ab")
        env = {**os.environ, **self.env}
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """kill -9, then reap."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 15) -> int | None:
        if self.proc is None:
            return None
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    """N nodes; use as a context manager so every process is stopped by PID."""

    def __init__(
        self,
        base_dir: Path,
        size: int = 3,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        placement: list[tuple[str, str | None]] | None = None,
    ) -> None:
        """``placement``: (host, network namespace) per node; default 127.0.0.1, none. With
        ``--tls`` in ``extra_args`` the nodes serve HTTPS; the test client does not verify
        (the nodes' own relays do: that is what such tests check)."""
        scheme = "https" if any(a.startswith("--tls") for a in extra_args or []) else "http"
        placement = placement or [("127.0.0.1", None)] * size
        env = dict(env or {})
        local = all(is_loopback(host) for host, _ in placement)
        self.auth: httpx.BasicAuth | None = None
        if not local:  # as on a real network: `serve` refuses to start without these
            password = secrets.token_urlsafe(16)
            env.setdefault("CFS_RAFT_PASSWORD", secrets.token_urlsafe(24))
            env.setdefault("CFS_BOOTSTRAP_ADMIN", f"{NETWORK_ADMIN}:{password}")
            self.auth = httpx.BasicAuth(NETWORK_ADMIN, password)
        ports = free_ports(2 * size)
        rafts = [f"{placement[i][0]}:{ports[size + i]}" for i in range(size)]
        self.nodes = [
            NodeProcess(
                node_id=f"n{i + 1}",
                api_port=ports[i],
                raft_port=ports[size + i],
                data_dir=base_dir / f"n{i + 1}",
                log_path=base_dir / f"n{i + 1}.log",
                peers=[r for j, r in enumerate(rafts) if j != i],
                extra_args=list(extra_args or []),
                env=dict(env),
                host=placement[i][0],
                netns=placement[i][1],
                scheme=scheme,
                dev=local,
            )
            for i in range(size)
        ]
        self.client = httpx.Client(timeout=10, verify=scheme == "http", auth=self.auth)
        self._base_dir = base_dir
        self._extra_args = list(extra_args or [])
        self._env = env

    def spawn(self, dials_out: bool = False) -> int:
        """Start one more node whose --peers name every current node (it joins as a voter
        only when added through the membership API); returns its index.

        ``dials_out``: give it a Raft address above every member's. pysyncobj connects from
        the higher address to the lower, so such a node opens the connections itself and,
        before it is a member, sees them accepted and dropped (the case that let a
        not-yet-added node campaign, issue 13 item 7); otherwise which side dials is chance.
        """
        api_port, raft_port = free_ports(2)
        highest = max(n.raft_port for n in self.nodes)  # 5-digit ports: text order is numeric
        for _ in range(1000):
            if not dials_out or raft_port > highest:
                break
            api_port, raft_port = free_ports(2)
        else:
            raise RuntimeError(f"no free Raft port above {highest}")
        name = f"n{len(self.nodes) + 1}"
        node = NodeProcess(
            node_id=name,
            api_port=api_port,
            raft_port=raft_port,
            data_dir=self._base_dir / name,
            log_path=self._base_dir / f"{name}.log",
            peers=[n.raft for n in self.nodes],
            extra_args=list(self._extra_args),
            env=dict(self._env),
            scheme=self.nodes[0].scheme,
        )
        self.nodes.append(node)
        node.start()
        self.wait_alive(len(self.nodes) - 1)
        return len(self.nodes) - 1

    def wait_alive(self, index: int, timeout: float = 30) -> None:
        """Until the node's API answers /healthz (it may not be ready: no leader yet)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.nodes[index].alive:
            try:
                if (
                    self.client.get(self.nodes[index].url + "/healthz", timeout=1).status_code
                    == 200
                ):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"node {index} never answered /healthz: {self.tail_log(index)}")

    def __enter__(self) -> Cluster:
        try:
            for node in self.nodes:
                node.start()
            self.wait_ready()
            if self.auth is not None:
                self.wait_authenticated()
        except BaseException:
            self.close()  # __exit__ does not run when __enter__ fails: stop what started
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        for node in self.nodes:
            node.terminate()
        self.client.close()

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def status(self, index: int) -> dict[str, Any] | None:
        try:
            response = self.client.get(self.nodes[index].url + "/api/v1/cluster", timeout=2)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def wait_ready(self, timeout: float = 30, nodes: list[int] | None = None) -> None:
        """Wait until every (listed, alive) node answers /readyz 200."""
        indexes = nodes if nodes is not None else [i for i, n in enumerate(self.nodes) if n.alive]
        deadline = time.monotonic() + timeout
        pending = set(indexes)
        while pending and time.monotonic() < deadline:
            for i in list(pending):
                try:
                    response = self.client.get(self.nodes[i].url + "/readyz", timeout=1)
                except httpx.HTTPError:
                    continue
                if response.status_code == 200:
                    pending.discard(i)
            if pending:
                time.sleep(0.05)
        if pending:
            logs = {self.nodes[i].node_id: self.tail_log(i) for i in pending}
            raise TimeoutError(f"nodes not ready: {sorted(pending)}; logs: {logs}")

    def wait_authenticated(self, timeout: float = 30) -> None:
        """Until every node accepts ``auth``: the bootstrap administrator is applied through
        Raft after the nodes are ready."""
        deadline = time.monotonic() + timeout
        for i, node in enumerate(self.nodes):
            while True:
                try:
                    if self.client.get(node.url + "/api/v1/cluster", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"node {i} never accepted the administrator")
                time.sleep(0.05)

    def leader_index(self, timeout: float = 15, exclude: set[int] | None = None) -> int:
        """Index of a live node (not in ``exclude``) that a live node names leader and that
        agrees it leads (bounded wait). Excluded nodes are not even asked: a SIGSTOPped node
        would stall every poll for the status timeout."""
        skip = exclude or set()
        candidates = [i for i, n in enumerate(self.nodes) if n.alive and i not in skip]
        by_id = {self.nodes[i].node_id: i for i in candidates}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i in candidates:
                status = self.status(i)
                leader = by_id.get(status.get("Leader") or "") if status else None
                if leader is None:
                    continue
                own = status if leader == i else self.status(leader)
                if own is not None and own.get("Leader") == self.nodes[leader].node_id:
                    return leader
            time.sleep(0.05)
        raise TimeoutError("no leader elected")

    def tail_log(self, index: int, lines: int = 30) -> str:
        path = self.nodes[index].log_path
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
