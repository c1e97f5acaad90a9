"""Test harness: the compose cluster (compose/) in real containers, driven by the Docker SDK.

Each `ComposeCluster` is its own compose project (a unique name, free loopback ports, a /24
no other network uses, fresh secrets), so it never touches what `make compose-up` started. The
compose tool creates and removes the project as a user would; faults (kill, pause, network
disconnect) and inspection go through the Docker SDK. `close()` removes every container,
network and volume labelled with the project, whatever state a failed test left it in.

Traffic goes only to 127.0.0.1 (the ports compose publishes) and between the containers on
the project's own network.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
from docker.models.containers import Container
from docker.models.networks import Network

from support.clusterkit import free_ports

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "compose"
NODES = ("cfs1", "cfs2", "cfs3")
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
# The test's own image tags: layers are shared with `make compose-images` through the build cache.
NODE_IMAGE = "cfs-cluster:pytest"
HAPROXY_IMAGE = "cfs-haproxy:pytest"


def engine() -> docker.DockerClient | None:
    """A client for the local engine, or None when no engine answers."""
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except (docker.errors.DockerException, OSError):
        return None
    return client


def compose_command() -> list[str] | None:
    """`docker compose` (the v2 plugin) where it exists, else `docker-compose`, else None."""
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, timeout=30, check=False
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    found = shutil.which("docker-compose")
    return [found] if found else None


def build_images(node_image: str, haproxy_image: str, revision: str) -> float:
    """`compose/cluster.sh images` with the test's tags; returns the seconds it took."""
    started = time.monotonic()
    env = {**os.environ, "CFS_IMAGE": node_image, "HAPROXY_IMAGE": haproxy_image}
    env["CFS_REVISION"] = revision
    result = subprocess.run(
        [str(COMPOSE_DIR / "cluster.sh"), "images"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert result.returncode == 0, f"image build failed:\n{result.stdout}\n{result.stderr}"
    return time.monotonic() - started


def _free_subnet_prefix(client: docker.DockerClient) -> str:
    """A 172.28.X prefix whose /24 overlaps no existing Docker network."""
    used = set()
    for network in client.networks.list():
        for config in (network.attrs.get("IPAM") or {}).get("Config") or []:
            used.add(str(config.get("Subnet", "")).rsplit(".", 2)[0])
    for third in range(100, 250):
        prefix = f"172.28.{third}"
        if prefix not in used:
            return prefix
    raise RuntimeError("no free 172.28.X.0/24 for the test network")


@dataclass
class ComposeCluster:
    client: docker.DockerClient
    compose: list[str]
    workdir: Path
    node_image: str = NODE_IMAGE
    haproxy_image: str = HAPROXY_IMAGE
    project: str = field(default_factory=lambda: f"cfspytest{secrets.token_hex(4)}")
    admin: tuple[str, str] = field(default_factory=lambda: ("admin", secrets.token_urlsafe(12)))
    raft_password: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    ports: dict[str, int] = field(default_factory=dict)
    subnet_prefix: str = ""

    def __post_init__(self) -> None:
        front, stats, *nodes = free_ports(2 + len(NODES))
        self.ports = {"front": front, "stats": stats, **dict(zip(NODES, nodes, strict=True))}
        self.subnet_prefix = _free_subnet_prefix(self.client)
        # An empty env file: the developer's compose/.env never leaks into the test project.
        self._env_file = self.workdir / "compose.env"
        self._env_file.write_text("")
        self.http = httpx.Client(timeout=3, auth=self.admin)

    # ----------------------------------------------------------------- compose

    def environment(self, node_image: str | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            CFS_IMAGE=node_image or self.node_image,
            HAPROXY_IMAGE=self.haproxy_image,
            CFS_RAFT_PASSWORD=self.raft_password,
            CFS_BOOTSTRAP_ADMIN=":".join(self.admin),
            CFS_PORT=str(self.ports["front"]),
            CFS_STATS_PORT=str(self.ports["stats"]),
            CFS_SUBNET_PREFIX=self.subnet_prefix,
        )
        for i, name in enumerate(NODES, start=1):
            env[f"CFS{i}_PORT"] = str(self.ports[name])
        return env

    def run(self, *args: str, node_image: str | None = None, timeout: float = 300) -> str:
        command = [
            *self.compose,
            "--env-file", str(self._env_file),
            "--project-name", self.project,
            "--project-directory", str(COMPOSE_DIR),
            "--file", str(COMPOSE_DIR / "docker-compose.yml"),
            *args,
        ]  # fmt: skip
        result = subprocess.run(
            command,
            env=self.environment(node_image),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout + result.stderr

    def up(self, *services: str, node_image: str | None = None) -> None:
        self.run("up", "--detach", "--no-build", *services, node_image=node_image)

    def down(self, volumes: bool = False) -> None:
        self.run("down", "--remove-orphans", *(["--volumes"] if volumes else []))

    # ----------------------------------------------------------------- what runs

    @property
    def front(self) -> str:
        return f"http://127.0.0.1:{self.ports['front']}"

    def node_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    @property
    def node_urls(self) -> list[str]:
        return [self.node_url(name) for name in NODES]

    def _labelled(self) -> dict[str, str]:
        return {"label": f"{PROJECT_LABEL}={self.project}"}

    def containers(self) -> dict[str, Container]:
        found = self.client.containers.list(all=True, filters=self._labelled())
        return {c.labels[SERVICE_LABEL]: c for c in found}

    def container(self, service: str) -> Container:
        return self.containers()[service]

    def network(self) -> Network:
        (network,) = self.client.networks.list(filters=self._labelled())
        return network

    def volumes(self) -> list[str]:
        return sorted(v.name for v in self.client.volumes.list(filters=self._labelled()))

    def logs(self, service: str, lines: int = 40) -> str:
        with contextlib.suppress(docker.errors.DockerException, KeyError):
            raw: bytes = self.container(service).logs(tail=lines)
            return raw.decode(errors="replace")
        return f"<no logs for {service}>"

    # ----------------------------------------------------------------- cluster state

    def status(self, name: str) -> dict[str, Any] | None:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            response = self.http.get(self.node_url(name) + "/api/v1/cluster", timeout=1)
            if response.status_code == 200:
                answer: dict[str, Any] = response.json()
                return answer
        return None

    def ready(self, url: str) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return self.http.get(url + "/readyz", timeout=1).status_code == 200
        return False

    def wait_ready(self, names: tuple[str, ...] = NODES, timeout: float = 90) -> None:
        """Every named node and HAProxy's front answer /readyz 200."""
        deadline = time.monotonic() + timeout
        urls = [self.node_url(n) for n in names] + [self.front]
        while not all(self.ready(url) for url in urls):
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n}\n{self.logs(n)}" for n in (*names, "haproxy"))
                raise AssertionError(f"not ready after {timeout} s: {urls}\n{logs}")
            time.sleep(0.2)

    def leader(self, exclude: set[str] | None = None, timeout: float = 30) -> str:
        """The leader that a node other than ``exclude`` reports, once it has quorum."""
        exclude = exclude or set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name in NODES:
                if name in exclude:
                    continue
                status = self.status(name)
                leader = status and status.get("Leader")
                if status and status.get("HasQuorum") and leader and leader not in exclude:
                    return str(leader)
            time.sleep(0.1)
        raise AssertionError(f"no leader outside {exclude} after {timeout} s")

    def haproxy_states(self) -> dict[str, tuple[str, str]]:
        """HAProxy's view of the backend servers: name -> (status, last check status)."""
        url = f"http://127.0.0.1:{self.ports['stats']}/;csv"
        text = self.http.get(url, timeout=2).text.lstrip("# ")
        return {
            row["svname"]: (row["status"], row["check_status"])
            for row in csv.DictReader(io.StringIO(text))
            if row["pxname"] == "cfs_nodes" and row["svname"] not in ("BACKEND", "FRONTEND")
        }

    def wait_haproxy(self, want: dict[str, str], timeout: float = 30) -> dict[str, tuple[str, str]]:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.HTTPError):
                states = self.haproxy_states()
                if all(states.get(n, ("?", ""))[0] == status for n, status in want.items()):
                    return states
            if time.monotonic() > deadline:
                raise AssertionError(f"HAProxy never showed {want}: {self.haproxy_states()}")
            time.sleep(0.1)

    # ----------------------------------------------------------------- cleanup

    def close(self) -> None:
        """Remove the project's containers, networks and volumes, by label and id."""
        self.http.close()
        with contextlib.suppress(AssertionError, subprocess.SubprocessError):
            self.down(volumes=True)
        for container in self.client.containers.list(all=True, filters=self._labelled()):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
        for network in self.client.networks.list(filters=self._labelled()):
            with contextlib.suppress(docker.errors.NotFound):
                network.remove()
        for volume in self.client.volumes.list(filters=self._labelled()):
            with contextlib.suppress(docker.errors.NotFound):
                volume.remove(force=True)

    def __enter__(self) -> ComposeCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
