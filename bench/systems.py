"""The systems under test, each started on free 127.0.0.1 ports and stopped by PID.

- ``CfsCluster``: 3 (or 5) real ``cfs serve`` processes (tests/support/clusterkit.py) in the
  PRODUCTION configuration by default — no ``--dev``, a Raft password, ``--auth required`` with a
  bootstrap administrator whose Basic credentials every load generator sends, the journal synced
  (fdatasync, group commit: the storage default) — or ``--dev`` (open, no Raft password) as the
  labelled extra; plus helpers to register groups/sessions through the API;
- ``EtcdCluster``: 3 etcd members (Debian ``etcd-server``) and their JSON gateway;
- ``EchoServer``: a raw ASGI app under uvicorn (uvloop + httptools) answering the heartbeat
  JSON: the HTTP stack's ceiling.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from . import httpload

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from support import clusterkit  # noqa: E402

free_ports = clusterkit.free_ports
HB_BODY = b'{"FailoverScore": 100}'
API = "/api/v1/clientfailover"


def wait_http(url: str, timeout: float, ok: tuple[int, ...] = (200,)) -> float:
    """Poll ``url`` until it answers one of ``ok``; seconds waited."""
    start = time.monotonic()
    with httpx.Client(timeout=1) as client:
        while time.monotonic() - start < timeout:
            try:
                if client.get(url).status_code in ok:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout} s")


# ---------------------------------------------------------------------- cfs


BENCH_ADMIN = "bench-admin"
STARTUP_TIMEOUT = 120.0


def basic_header(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + b64(f"{user}:{password}")}


def describe(production: bool, nodes: int, extra_args: list[str] | None = None) -> dict[str, Any]:
    """What a table was measured on: printed above it (bench/render.py)."""
    extra = list(extra_args or [])
    if production:
        config: dict[str, Any] = {
            "mode": "production",
            "auth": "required, Basic credentials on every request (verified once, then cached)",
            "raft_password": True,
        }
    else:
        config = {"mode": "dev", "auth": "off (--dev)", "raft_password": False}
    config["nodes"] = nodes
    config["journal"] = (
        "not synced (--unsafe-no-fsync)"
        if "--unsafe-no-fsync" in extra
        else "fdatasync, group commit"
    )
    config["args"] = (["--dev"] if not production else []) + extra
    return config


class CfsCluster(clusterkit.Cluster):
    """``production`` (the default): what users run; else ``serve --dev`` (open, no Raft secret)."""

    def __init__(
        self,
        base_dir: Path,
        production: bool = True,
        size: int = 3,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        base_dir.mkdir(parents=True, exist_ok=True)
        env = dict(env or {})
        password = secrets.token_urlsafe(16)
        if production:
            env.setdefault("CFS_RAFT_PASSWORD", secrets.token_urlsafe(24))
            env.setdefault("CFS_BOOTSTRAP_ADMIN", f"{BENCH_ADMIN}:{password}")
        super().__init__(base_dir, size=size, extra_args=extra_args, env=env)
        self.production = production
        self.config = describe(production, size, extra_args)
        self.headers: dict[str, str] = {}
        self.credentials: tuple[str, str] | None = None
        if production:
            for node in self.nodes:
                node.dev = False  # as on a real network: Raft password, auth required
            self.credentials = (BENCH_ADMIN, password)
            self.headers = basic_header(BENCH_ADMIN, password)
            self.auth = httpx.BasicAuth(BENCH_ADMIN, password)
            self.client.close()
            self.client = httpx.Client(timeout=10, auth=self.auth)

    def port(self, index: int) -> int:
        return self.nodes[index].api_port

    def __enter__(self) -> CfsCluster:
        """As clusterkit's, with a longer wait: on a loaded 2-core machine production nodes
        (Raft key derivation, the administrator's password hash) can take over 30 s."""
        try:
            for node in self.nodes:
                node.start()
            self.wait_ready(timeout=STARTUP_TIMEOUT)
            if self.auth is not None:
                self.wait_authenticated(timeout=STARTUP_TIMEOUT)
        except BaseException:
            self.close()
            raise
        return self

    def pids(self) -> list[int]:
        return [n.proc.pid for n in self.nodes if n.proc is not None]

    def follower_index(self, leader: int) -> int:
        return (leader + 1) % len(self.nodes)

    def register(
        self, groups: int, timeout_span: str, prefix: str = "g", node: int | None = None
    ) -> tuple[list[tuple[str, str]], float]:
        """Create ``groups`` groups × 2 sessions (a, b) through the API; (sessions, seconds)."""
        index = self.leader_index() if node is None else node
        names = [f"{prefix}{i:05d}" for i in range(groups)]
        start = time.monotonic()
        group_requests = [
            (
                "POST",
                f"{API}/groups",
                json.dumps({"Id": g, "FailoverTimeout": timeout_span}).encode(),
            )
            for g in names
        ]
        port = self.port(index)
        self.send_all(port, group_requests)
        sessions = [(g, s) for g in names for s in ("a", "b")]
        session_requests = [
            ("POST", f"{API}/groups/{g}/clientsessions", json.dumps({"Id": s, "Name": s}).encode())
            for g, s in sessions
        ]
        self.send_all(port, session_requests)
        return sessions, time.monotonic() - start

    def send_all(self, port: int, requests: list[httpload.Request], attempts: int = 4) -> None:
        """Send every request (64 at once); resend those that timed out or got a 5xx — on a
        loaded machine a write can outlast the client's timeout — and count a resent creation
        that answers 409 (it was applied the first time) as done."""
        pending = list(range(len(requests)))
        for attempt in range(attempts):
            batch = [requests[i] for i in pending]
            results = httpload.run(
                httpload.run_all("127.0.0.1", port, batch, 64, self.headers, timeout=30)
            )
            assert isinstance(results, list)
            done_codes = range(200, 300) if attempt == 0 else (*range(200, 300), 409)
            failed = [
                (i, r) for i, r in zip(pending, results, strict=True) if r[0] not in done_codes
            ]
            fatal = [r for _, r in failed if 400 <= r[0] < 500 and r[0] != 409]
            if fatal:
                raise RuntimeError(f"{len(fatal)} of {len(batch)} requests refused: {fatal[:3]}")
            if not failed:
                return
            pending = [i for i, _ in failed]
            time.sleep(1)
        raise RuntimeError(f"{len(pending)} of {len(requests)} requests failed {attempts} times")


def heartbeat_requests(sessions: list[tuple[str, str]]) -> list[httpload.Request]:
    return [
        ("POST", f"{API}/groups/{g}/clientsessions/{s}/heartbeat", HB_BODY) for g, s in sessions
    ]


def _check(results: object) -> None:
    assert isinstance(results, list)
    bad = [r for r in results if not 200 <= r[0] < 300]
    if bad:
        raise RuntimeError(f"{len(bad)} of {len(results)} requests failed, e.g. {bad[:3]}")


# ---------------------------------------------------------------------- etcd


class EtcdCluster:
    """Three etcd members on 127.0.0.1; the JSON gateway is on each client port."""

    def __init__(self, base_dir: Path, size: int = 3) -> None:
        self.base_dir = base_dir
        base_dir.mkdir(parents=True, exist_ok=True)
        ports = free_ports(2 * size)
        self.client_ports = ports[:size]
        self.peer_ports = ports[size:]
        self.names = [f"e{i + 1}" for i in range(size)]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.client = httpx.Client(timeout=5)

    def __enter__(self) -> EtcdCluster:
        binary = shutil.which("etcd") or "/usr/bin/etcd"
        initial = ",".join(
            f"{n}=http://127.0.0.1:{p}" for n, p in zip(self.names, self.peer_ports, strict=True)
        )
        for name, cport, pport in zip(self.names, self.client_ports, self.peer_ports, strict=True):
            log = (self.base_dir / f"{name}.log").open("ab")
            cmd = [
                binary, "--name", name, "--data-dir", str(self.base_dir / name),
                "--listen-client-urls", f"http://127.0.0.1:{cport}",
                "--advertise-client-urls", f"http://127.0.0.1:{cport}",
                "--listen-peer-urls", f"http://127.0.0.1:{pport}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--initial-cluster-token", f"bench-{os.getpid()}",
                "--logger", "zap", "--log-level", "warn",
            ]  # fmt: skip
            self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
            log.close()
        for port in self.client_ports:
            wait_http(f"http://127.0.0.1:{port}/health", 30)
        return self

    def __exit__(self, *exc: Any) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.client.close()

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def post(self, index: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.client_ports[index]}{path}"
        response = self.client.post(url, json=body)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def leader_index(self, timeout: float = 15) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i in range(len(self.procs)):
                try:
                    status = self.post(i, "/v3/maintenance/status", {})
                except httpx.HTTPError:
                    continue
                if status.get("leader") and status["leader"] == status["header"]["member_id"]:
                    return i
            time.sleep(0.05)
        raise TimeoutError("etcd has no leader")

    def grant(self, count: int, ttl: int, node: int) -> list[str]:
        """``count`` leases of ``ttl`` seconds; their ids (decimal strings, as the gateway uses)."""
        body = json.dumps({"TTL": ttl}).encode()
        requests = [("POST", "/v3/lease/grant", body)] * count
        results = httpload.run(httpload.run_all("127.0.0.1", self.client_ports[node], requests, 32))
        assert isinstance(results, list)
        _check(results)
        return [str(json.loads(b)["ID"]) for _, b in results]


def keepalive_requests(lease_ids: list[str]) -> list[httpload.Request]:
    return [("POST", "/v3/lease/keepalive", json.dumps({"ID": i}).encode()) for i in lease_ids]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# ---------------------------------------------------------------------- echo


class EchoServer:
    def __init__(self, base_dir: Path) -> None:
        self.port = free_ports(1)[0]
        self.log_path = base_dir / "echo.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> EchoServer:
        cmd = [
            sys.executable, "-m", "uvicorn", "bench.echo:app",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--loop", "uvloop", "--http", "httptools",
            "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        log.close()
        wait_http(f"http://127.0.0.1:{self.port}/", 20, ok=(200, 404, 405))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
