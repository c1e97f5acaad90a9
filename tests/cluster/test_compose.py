"""compose/: the docker-compose cluster and its HAProxy, checked without a Docker engine.

- docker-compose.yml parses; every node's --raft/--peers/--advertise-url agree with the others,
  its own volume and address, and the flags are real `cfs serve` flags that build Settings.
- haproxy.cfg names exactly the compose nodes, health-checks /readyz, and `haproxy -c` accepts it.
- With the haproxy binary present: the same config, re-pointed at a real 3-node cluster on
  loopback, spreads requests over the nodes and takes a killed node out of rotation, and a node
  that is alive but not ready (no quorum) too: the check is readiness, not liveness.
"""

from __future__ import annotations

import argparse
import csv
import io
import ipaddress
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.clusterkit import Cluster, free_ports

from cfs_cluster.cli import serve as cli

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to parse docker-compose.yml")

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
API_PORT, RAFT_PORT = 5590, 5690
HAPROXY = shutil.which("haproxy")
NO_HAPROXY = "haproxy binary not installed (apt-get install haproxy; .ci/run installs it)"


def _compose() -> dict[str, Any]:
    """docker-compose.yml as compose reads it with no overrides: ``${VAR:-default}`` is the
    default (``${VAR:?error}``, the required secrets, stays as written)."""
    text = (COMPOSE / "docker-compose.yml").read_text()
    text = re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", text)
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def _nodes() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in _compose()["services"].items() if name.startswith("cfs")}


def _flags(service: dict[str, Any]) -> dict[str, str]:
    command = service["command"]
    assert command[0] == "serve"
    flags = {}
    for item in command[1:]:
        name, sep, value = item.partition("=")
        assert sep and name.startswith("--"), f"use --flag=value in compose commands: {item}"
        flags[name] = value
    return flags


def _serve_help_flags() -> set[str]:
    out = subprocess.run(
        [sys.executable, "-m", "cfs_cluster", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return set(re.findall(r"(--[a-z][a-z-]+)", out))


def test_three_nodes_each_with_its_own_volume_address_and_secrets() -> None:
    compose = _compose()
    nodes = _nodes()
    assert sorted(nodes) == ["cfs1", "cfs2", "cfs3"]
    subnet = ipaddress.ip_network(compose["networks"]["cfs"]["ipam"]["config"][0]["subnet"])
    addresses = []
    for name, service in nodes.items():
        flags = _flags(service)
        assert service["hostname"] == name
        (volume,) = service["volumes"]
        source, target = volume.split(":")[:2]
        assert source == f"{name}-data" and source in compose["volumes"]
        assert target == flags["--data-dir"]
        address = ipaddress.ip_address(service["networks"]["cfs"]["ipv4_address"])
        assert address in subnet
        addresses.append(address)
        env = service["environment"]
        for secret in ("CFS_RAFT_PASSWORD", "CFS_BOOTSTRAP_ADMIN"):
            assert env[secret].startswith("${" + secret + ":?"), f"{secret} must come from .env"
    assert len(set(addresses)) == len(addresses)
    example = (COMPOSE / ".env.example").read_text()
    for key in ("CFS_RAFT_PASSWORD", "CFS_BOOTSTRAP_ADMIN"):
        assert re.search(rf"^{key}=\S*change-me", example, re.M), f"{key}: placeholder only"


def test_peers_and_addresses_agree_across_nodes() -> None:
    nodes = {name: _flags(s) for name, s in _nodes().items()}
    rafts = {name: f["--raft"] for name, f in nodes.items()}
    for name, flags in nodes.items():
        assert flags["--node-id"] == name
        assert flags["--raft"] == f"{name}:{RAFT_PORT}"
        assert flags["--api"] == f"0.0.0.0:{API_PORT}"
        assert flags["--advertise-url"] == f"http://{name}:{API_PORT}"
        peers = set(flags["--peers"].split(","))
        assert peers == {r for other, r in rafts.items() if other != name}, name


def test_every_flag_exists_in_cfs_serve_and_builds_settings() -> None:
    known = _serve_help_flags()
    for name, service in _nodes().items():
        used = set(_flags(service))
        assert used <= known, f"{name}: unknown cfs serve flags {sorted(used - known)}"
        parser = argparse.ArgumentParser()
        cli.serve_parser(parser.add_subparsers(dest="command"))
        args = parser.parse_args(service["command"])
        args.raft_password = "from-the-env-file"
        settings = cli.build_settings(args)  # the validation `cfs serve` itself runs
        assert settings.api_url == f"http://{name}:{API_PORT}"


def _haproxy_servers(config: str) -> dict[str, str]:
    return dict(re.findall(r"^\s*server\s+(\S+)\s+(\S+)\s+check", config, re.M))


def test_haproxy_backends_are_the_compose_nodes_checked_on_readyz() -> None:
    config = (COMPOSE / "haproxy.cfg").read_text()
    nodes = _nodes()
    assert _haproxy_servers(config) == {name: f"{name}:{API_PORT}" for name in nodes}
    assert re.search(r"^\s*option httpchk GET /readyz\s*$", config, re.M)
    assert re.search(r"^\s*default-server inter 1s fastinter 250ms fall 2 rise 2\b", config, re.M)
    # A connect to a vanished node is given up, and redispatched, inside an adapter's timeout.
    assert re.search(r"^\s*timeout connect 500ms\s*$", config, re.M)
    assert re.search(r"^\s*option redispatch\s*$", config, re.M)
    assert re.search(rf"^\s*bind :{API_PORT}\s*$", config, re.M)
    haproxy = _compose()["services"]["haproxy"]
    assert f"{API_PORT}:{API_PORT}" in haproxy["ports"]
    assert "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in haproxy["volumes"]
    assert set(haproxy["depends_on"]) == set(nodes)


@pytest.mark.skipif(HAPROXY is None, reason=NO_HAPROXY)
def test_haproxy_accepts_the_config() -> None:
    assert HAPROXY is not None
    result = subprocess.run(
        [HAPROXY, "-c", "-f", str(COMPOSE / "haproxy.cfg")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    # Offline the cfsN names do not resolve: a warning, not an error (init-addr none).
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- live HAProxy


def _loopback_config(cluster: Cluster, front: int, stats: int) -> str:
    """compose/haproxy.cfg with the listeners and servers moved to loopback ports."""
    config = (COMPOSE / "haproxy.cfg").read_text()
    config = re.sub(r"^resolvers docker\n(?:[ \t]+.*\n)+", "", config, flags=re.M)
    config = config.replace(" resolvers docker", "")
    config = config.replace("log stdout format raw local0", "log stderr format raw local0")
    config = config.replace(f"bind :{API_PORT}", f"bind 127.0.0.1:{front}")
    config = config.replace("bind :8404", f"bind 127.0.0.1:{stats}")
    for node in cluster.nodes:
        name = node.node_id.replace("n", "cfs")
        config = config.replace(f"{name}:{API_PORT}", f"127.0.0.1:{node.api_port}")
    assert "cfs1:" not in config and "resolvers" not in config
    return config


def _server_states(client: httpx.Client, stats: int) -> dict[str, tuple[str, str]]:
    text = client.get(f"http://127.0.0.1:{stats}/;csv", timeout=2).text.lstrip("# ")
    rows = csv.DictReader(io.StringIO(text))
    return {
        r["svname"]: (r["status"], r["check_status"])
        for r in rows
        if r["pxname"] == "cfs_nodes" and r["svname"] not in ("BACKEND", "FRONTEND")
    }


def _wait_states(
    client: httpx.Client, stats: int, want: dict[str, str], timeout: float = 15
) -> dict[str, tuple[str, str]]:
    deadline = time.monotonic() + timeout
    while True:
        states = _server_states(client, stats)
        if all(states.get(name, ("?",))[0] == status for name, status in want.items()):
            return states
        assert time.monotonic() < deadline, f"HAProxy never saw {want}: {states}"
        time.sleep(0.1)


def _answering_nodes(client: httpx.Client, front: int, count: int) -> set[str]:
    seen = set()
    for _ in range(count):
        response = client.get(f"http://127.0.0.1:{front}/api/v1/cluster", timeout=5)
        assert response.status_code == 200, response.text
        seen.add(response.json()["NodeId"])
    return seen


@pytest.mark.cluster
@pytest.mark.skipif(HAPROXY is None, reason=NO_HAPROXY)
def test_haproxy_spreads_requests_and_drops_unready_nodes(tmp_path: Path) -> None:
    assert HAPROXY is not None
    front, stats = free_ports(2)
    with Cluster(tmp_path, size=3) as cluster:
        config = tmp_path / "haproxy.cfg"
        config.write_text(_loopback_config(cluster, front, stats))
        log = (tmp_path / "haproxy.log").open("wb")
        proxy = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=log, stderr=log)
        try:
            with httpx.Client() as client:
                deadline = time.monotonic() + 15
                while True:  # haproxy is listening and has checked every server once
                    try:
                        _wait_states(client, stats, dict.fromkeys(("cfs1", "cfs2", "cfs3"), "UP"))
                        break
                    except (httpx.HTTPError, AssertionError):
                        assert time.monotonic() < deadline, "haproxy did not come up"
                        time.sleep(0.1)
                assert _answering_nodes(client, front, 9) == {"n1", "n2", "n3"}

                cluster.nodes[2].kill()  # a dead node leaves the rotation
                states = _wait_states(client, stats, {"cfs3": "DOWN", "cfs1": "UP", "cfs2": "UP"})
                assert states["cfs3"][1].startswith("L4"), states  # connection refused
                assert _answering_nodes(client, front, 6) == {"n1", "n2"}

                cluster.nodes[1].kill()  # n1 is alive but has no quorum: /readyz says 503
                states = _wait_states(client, stats, {"cfs1": "DOWN", "cfs2": "DOWN"})
                assert states["cfs1"][1] == "L7STS", states  # HTTP status, not a dead socket
                assert client.get(f"http://127.0.0.1:{front}/api/v1/cluster").status_code == 503
        finally:
            proxy.terminate()
            proxy.wait(timeout=10)
            log.close()


def test_haproxy_passes_the_client_address_to_the_nodes() -> None:
    config = (COMPOSE / "haproxy.cfg").read_text()
    frontend = config.split("frontend cfs_api", 1)[1].split("\nbackend", 1)[0]
    assert re.search(r"^\s*http-request del-header X-Forwarded-For\s*$", frontend, re.M)
    assert re.search(r"^\s*option forwardfor\s*$", frontend, re.M)
    haproxy = _compose()["services"]["haproxy"]["networks"]["cfs"]["ipv4_address"]
    for name, service in _nodes().items():
        trusted = service["environment"]["CFS_TRUSTED_PROXIES"]
        assert ipaddress.ip_address(haproxy) in ipaddress.ip_network(trusted), name


@pytest.mark.cluster
@pytest.mark.skipif(HAPROXY is None, reason=NO_HAPROXY)
def test_behind_haproxy_the_backoff_counts_each_client(tmp_path: Path) -> None:
    """Through the compose HAProxy config every client reaches the node from the proxy's
    address; with that address trusted the node counts failures per real client, so one
    client guessing does not block another one's first login."""
    assert HAPROXY is not None
    front, stats = free_ports(2)
    admin = ("root", "haproxy-admin-pw")
    env = {"CFS_BOOTSTRAP_ADMIN": f"{admin[0]}:{admin[1]}"}
    extra = ["--trusted-proxies", "127.0.0.1/32"]
    with Cluster(tmp_path, size=1, env=env, extra_args=extra) as cluster:
        config = tmp_path / "haproxy.cfg"
        config.write_text(_loopback_config(cluster, front, stats))
        log = (tmp_path / "haproxy.log").open("wb")
        proxy = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=log, stderr=log)
        guesser = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
        other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.3"))
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    _wait_states(guesser, stats, {"cfs1": "UP"})
                    break
                except (httpx.HTTPError, AssertionError):
                    assert time.monotonic() < deadline, "haproxy did not come up"
                    time.sleep(0.1)
            url = f"http://127.0.0.1:{front}/api/v1/cluster"
            while guesser.get(url).status_code != 401:  # the bootstrap administrator exists
                assert time.monotonic() < deadline, "bootstrap administrator never applied"
                time.sleep(0.05)
            for i in range(20):  # one guess at each of 20 accounts: the source's threshold
                assert guesser.get(url, auth=(f"user{i}", "guess")).status_code == 401
            assert guesser.get(url, auth=admin).status_code == 429  # this client waits
            assert other.get(url, auth=admin).status_code == 200  # another client does not
            assert guesser.get(url, auth=admin).status_code == 200  # now verified: never waits
        finally:
            guesser.close()
            other.close()
            proxy.terminate()
            proxy.wait(timeout=10)
            log.close()


def test_images_build_without_a_registry_and_stay_overridable() -> None:
    """Both images start FROM the debootstrap base (compose/images/base.sh) unless told
    otherwise, and every image name is a variable for users who do have a registry."""
    raw = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())["services"]
    for dockerfile in ("Dockerfile", "haproxy.Dockerfile"):
        text = (COMPOSE / dockerfile).read_text()
        assert re.search(r"^ARG BASE_IMAGE=cfs-base:\S+$", text, re.M), dockerfile
        assert re.findall(r"^FROM (.+)$", text, re.M) == ["${BASE_IMAGE}"], dockerfile
    for name, service in raw.items():
        assert re.fullmatch(r"\$\{[A-Z_]+_IMAGE:-cfs-[a-z]+:latest\}", service["image"]), name
        assert service["build"]["args"]["BASE_IMAGE"] == "${CFS_BASE_IMAGE:-cfs-base:bookworm}"
