"""Issue 11, items 3, 5 and 6: no unauthenticated way into a node, and a back-off that protects
accounts without locking out adapters.

- `cfs serve` (real processes) refuses, before it binds anything, a node reachable beyond
  loopback without a Raft password, ``--dev`` beyond loopback, ``--auth off`` beyond loopback,
  the removed ``--auth auto``, and a lone node that could never get an administrator.
- `cfs dev-cluster` gives its nodes a random Raft secret (environment, not argv); their Raft
  port refuses a frame from an unauthenticated peer without running it.
- Back-off per account and per source, attempts counted before hashing, verified credentials
  (cached Basic, Bearer) never refused, X-Forwarded-For honoured only from trusted proxies.
- The token endpoint hashes for unknown client ids too; the last administrator (users and
  OAuth clients together) cannot be removed or demoted, also concurrently through two nodes.
"""

from __future__ import annotations

import asyncio
import base64
import os
import pickle
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.clusterkit import Cluster, NodeProcess, free_ports
from support.nodes import ADMIN, GROUPS, assert_error, basic, settings_for, until

from cfs_cluster import engine
from cfs_cluster.api.app import create_app
from cfs_cluster.cluster.node import Node
from cfs_cluster.errors import TooManyRequests, Unauthorized, Unavailable
from cfs_cluster.security import auth, passwords, roles
from cfs_cluster.security.backoff import ClientAddress
from cfs_cluster.settings import SecuritySettings

PLC = ("plc1", "plc1-password")
TOKEN = "/identity/connect/token"
FORM = {"content-type": "application/x-www-form-urlencoded"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic_variant(name: str, password: str, spaces: int = 1) -> dict[str, str]:
    """The same credentials in another spelling of the header: not in the credential cache,
    so checking them costs a hash (and may have to wait for a back-off)."""
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"Authorization": "basic" + " " * spaces + token}


# --------------------------------------------------------------------------- serve refuses


def _serve(
    args: list[str], env: dict[str, str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """Run `cfs serve`; it must give up by itself, quickly (a node that starts is killed)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CFS_")}
    command = [sys.executable, "-m", "cfs_cluster", "serve", "--node-id", "n1", *args]
    with subprocess.Popen(
        command,
        env={**clean, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"`cfs serve {' '.join(args)}` started instead of refusing: {err[-800:]}")
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def _assert_refused(done: subprocess.CompletedProcess[str], data_dir: Path, *words: str) -> None:
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cfs: "), done.stderr  # no traceback
    for word in words:
        assert word in lines[0], lines[0]
    # Refused before anything started: the replicator creates the data directory first thing.
    assert not data_dir.exists()


@pytest.mark.parametrize(
    ("api", "raft", "env", "words"),
    [
        pytest.param("0.0.0.0", "127.0.0.1", {}, ["Raft password"], id="api-all-no-password"),
        pytest.param("127.0.0.1", "0.0.0.0", {}, ["Raft password"], id="raft-all-no-password"),
        pytest.param("10.1.2.3", "10.1.2.3", {}, ["Raft password"], id="address-no-password"),
        pytest.param("0.0.0.0", "127.0.0.1", {"CFS_DEV": "1"}, ["--dev", "--api"], id="CFS_DEV"),
        pytest.param("127.0.0.1", "[::]", {"CFS_DEV": "1"}, ["--dev", "--raft"], id="dev-raft"),
        pytest.param(
            "0.0.0.0",
            "0.0.0.0",
            {"CFS_DEV": "1", "CFS_RAFT_PASSWORD": "pw", "CFS_BOOTSTRAP_ADMIN": "a:b"},
            ["--dev", "loopback"],
            id="dev-with-password",
        ),
    ],
)
def test_serve_refuses_beyond_loopback_without_protection(
    tmp_path: Path, api: str, raft: str, env: dict[str, str], words: list[str]
) -> None:
    api_port, raft_port = free_ports(2)
    data_dir = tmp_path / "data"
    args = ["--api", f"{api}:{api_port}", "--raft", f"{raft}:{raft_port}"]
    done = _serve([*args, "--data-dir", str(data_dir)], env, tmp_path)
    _assert_refused(done, data_dir, *words)


def test_dev_flag_also_refuses_a_network_address(tmp_path: Path) -> None:
    api_port, raft_port = free_ports(2)
    data_dir = tmp_path / "data"
    args = ["--dev", "--api", f"0.0.0.0:{api_port}", "--raft", f"127.0.0.1:{raft_port}"]
    done = _serve([*args, "--data-dir", str(data_dir)], {}, tmp_path)
    _assert_refused(done, data_dir, "--dev", "0.0.0.0", "loopback")


def test_auth_off_is_refused_beyond_loopback(tmp_path: Path) -> None:
    api_port, raft_port = free_ports(2)
    data_dir = tmp_path / "data"
    env = {"CFS_RAFT_PASSWORD": "raft-secret", "CFS_BOOTSTRAP_ADMIN": "root:pw"}
    args = ["--auth", "off", "--api", f"0.0.0.0:{api_port}", "--raft", f"127.0.0.1:{raft_port}"]
    done = _serve([*args, "--data-dir", str(data_dir)], env, tmp_path)
    _assert_refused(done, data_dir, "--auth off", "loopback")


def test_auth_auto_is_gone_and_names_its_replacement(tmp_path: Path) -> None:
    api_port, raft_port = free_ports(2)
    data_dir = tmp_path / "data"
    args = ["--dev", "--auth", "auto", "--api", f"127.0.0.1:{api_port}"]
    args += ["--raft", f"127.0.0.1:{raft_port}", "--data-dir", str(data_dir)]
    done = _serve(args, {}, tmp_path)
    _assert_refused(done, data_dir, "auto", "--auth required", "CFS_BOOTSTRAP_ADMIN")


def test_a_lone_node_that_could_never_get_an_administrator_is_refused(tmp_path: Path) -> None:
    api_port, raft_port = free_ports(2)
    data_dir = tmp_path / "data"
    args = ["--api", f"127.0.0.1:{api_port}", "--raft", f"127.0.0.1:{raft_port}"]
    done = _serve([*args, "--data-dir", str(data_dir)], {"CFS_RAFT_PASSWORD": "pw"}, tmp_path)
    _assert_refused(done, data_dir, "CFS_BOOTSTRAP_ADMIN", "--peers")


@pytest.mark.cluster
def test_a_joining_node_starts_without_users_and_says_so(tmp_path: Path) -> None:
    """With --peers a node may start without an administrator (it learns the users through
    Raft); until then it answers 401 with a reason that says why."""
    api_port, raft_port, absent = free_ports(3)
    node = NodeProcess(
        node_id="n1",
        api_port=api_port,
        raft_port=raft_port,
        data_dir=tmp_path / "n1",
        log_path=tmp_path / "n1.log",
        peers=[f"127.0.0.1:{absent}"],
        env={"CFS_RAFT_PASSWORD": "raft-secret"},
        dev=False,
    )
    node.start()
    try:
        with httpx.Client(timeout=2) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if client.get(node.url + "/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert node.alive and time.monotonic() < deadline, tmp_path.joinpath("n1.log")
                time.sleep(0.05)
            refused = client.get(node.url + GROUPS, headers=basic(*ADMIN))
            assert "no users yet" in assert_error(refused, 401)["Reason"]
    finally:
        node.terminate()


# --------------------------------------------------------------------------- dev-cluster


class _MakeDirectory:
    """Unpickling this creates ``path``: what a hostile peer could run on an open Raft port."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.mkdir, (str(self.path),)


def _raft_frame(payload: object) -> bytes:
    """One pysyncobj message as an unauthenticated peer sends it: length, zlib(pickle)."""
    data = zlib.compress(pickle.dumps(payload))
    return struct.pack("i", len(data)) + data


def _two_free_ports_in_a_row() -> int:
    for _ in range(100):
        port = free_ports(1)[0]
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two free ports in a row")


@contextmanager
def _dev_cluster(tmp_path: Path) -> Iterator[tuple[int, list[int], str]]:
    """`cfs dev-cluster --nodes 2`; yields (raft port of n1, node PIDs, banner)."""
    api_port, raft_port = _two_free_ports_in_a_row(), _two_free_ports_in_a_row()
    command = [
        sys.executable, "-m", "cfs_cluster", "dev-cluster", "--nodes", "2",
        "--data-dir", str(tmp_path), "--api-port", str(api_port), "--raft-port", str(raft_port),
    ]  # fmt: skip
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CFS_")}
    proc = subprocess.Popen(command, env=clean, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        banner = ""
        while "Ctrl-C" not in banner:
            line = proc.stdout.readline()
            assert line, f"dev-cluster ended: {banner}"
            banner += line
        pids = [int(p) for p in re.findall(r"pid (\d+)", banner)]
        _wait_ready(f"http://127.0.0.1:{api_port}")  # a leader: the nodes share one secret
        yield raft_port, pids, banner
    finally:
        proc.send_signal(signal.SIGINT)  # dev-cluster stops its nodes by PID
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def _wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1) as client:
        while True:
            try:
                if client.get(url + "/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"{url} never became ready"
            time.sleep(0.1)


def _environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().partition("=")[::2] for item in raw if item)


@pytest.mark.cluster
def test_dev_cluster_nodes_use_a_random_raft_secret(tmp_path: Path) -> None:
    secrets = []
    for run in ("first", "second"):
        with _dev_cluster(tmp_path / run) as (raft_port, pids, banner):
            assert "Auth: OFF" in banner and "random secret" in banner
            environments = [_environment(pid) for pid in pids]
            secret = environments[0].get("CFS_RAFT_PASSWORD")
            assert secret and len(secret) >= 32
            assert all(e.get("CFS_RAFT_PASSWORD") == secret for e in environments)
            for pid in pids:  # not on the command line, where `ps` shows it
                assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
            secrets.append(secret)

            marker = tmp_path / f"pwned-{run}"
            with socket.create_connection(("127.0.0.1", raft_port), timeout=10) as sock:
                sock.sendall(_raft_frame(_MakeDirectory(marker)))
                try:
                    hung_up = sock.recv(1024) == b""  # it cannot decrypt the frame
                except TimeoutError:
                    hung_up = False
            assert not marker.exists(), "the Raft port unpickled an unauthenticated frame"
            assert hung_up
    assert secrets[0] != secrets[1]


# --------------------------------------------------------------------------- back-off (units)


def _authenticator(**security: Any) -> tuple[auth.Authenticator, list[float]]:
    users = {
        ADMIN[0]: engine.User(ADMIN[0], roles.ADMINISTRATORS, passwords.hash_password(ADMIN[1])),
        PLC[0]: engine.User(PLC[0], roles.USERS, passwords.hash_password(PLC[1])),
    }
    now = [1000.0]
    settings = SecuritySettings(auth="required", failures_before_backoff=3, **security)
    return auth.Authenticator(lambda: users, settings, clock=lambda: now[0]), now


def _header(credentials: dict[str, str]) -> bytes:
    return credentials["Authorization"].encode()


async def _attempt(
    authenticator: auth.Authenticator, credentials: dict[str, str], source: str
) -> str:
    """'ok', '401' or '429' for one Basic attempt."""
    try:
        await authenticator.authenticate(_header(credentials), source)
    except TooManyRequests:
        return "429"
    except Unauthorized:
        return "401"
    return "ok"


def test_failures_count_per_account_across_sources() -> None:
    async def scenario() -> None:
        a, _ = _authenticator()
        wrong = basic(ADMIN[0], "guess")
        assert [await _attempt(a, wrong, f"10.0.0.{i}") for i in range(3)] == ["401"] * 3
        # Guessed from three addresses: the account waits, from any address, even with the
        # right password (not verified before, so it would cost a hash) ...
        assert await _attempt(a, basic(*ADMIN), "10.9.9.9") == "429"
        # ... while other accounts at the same addresses are not held up.
        assert await _attempt(a, basic(*PLC), "10.0.0.1") == "ok"

    asyncio.run(scenario())


def test_one_accounts_success_never_clears_another_accounts_failures() -> None:
    async def scenario() -> None:
        a, _ = _authenticator(source_failures_before_backoff=4)
        wrong = basic(ADMIN[0], "guess")
        assert [await _attempt(a, wrong, "10.0.0.1") for _ in range(2)] == ["401"] * 2
        assert await _attempt(a, basic(*PLC), "10.0.0.1") == "ok"  # someone else logs in
        assert await _attempt(a, wrong, "10.0.0.1") == "401"  # the third guess still counts
        assert await _attempt(a, basic(*ADMIN), "10.0.0.2") == "429"
        # The source's count survived plc's success too: a fourth failure blocks the address.
        assert await _attempt(a, basic("nobody", "x"), "10.0.0.1") == "401"
        assert await _attempt(a, basic_variant(*PLC), "10.0.0.1") == "429"
        assert await _attempt(a, basic_variant(*PLC), "10.0.0.3") == "ok"

    asyncio.run(scenario())


def test_a_success_takes_back_only_its_own_failures() -> None:
    async def scenario() -> None:
        a, _ = _authenticator()
        assert await _attempt(a, basic(ADMIN[0], "typo"), "10.0.0.1") == "401"  # the admin
        assert await _attempt(a, basic(ADMIN[0], "guess"), "10.6.6.6") == "401"  # an attacker
        assert await _attempt(a, basic(*ADMIN), "10.0.0.1") == "ok"  # forgives the typo only
        assert await _attempt(a, basic(ADMIN[0], "guess2"), "10.6.6.6") == "401"
        assert await _attempt(a, basic_variant(*ADMIN), "10.0.0.1") == "ok"  # 2 of 3 counted
        assert await _attempt(a, basic(ADMIN[0], "guess3"), "10.6.6.6") == "401"
        assert await _attempt(a, basic_variant(*ADMIN, spaces=2), "10.0.0.5") == "429"

    asyncio.run(scenario())


def test_a_node_behind_without_a_leader_counts_no_account_it_has_not_heard_of() -> None:
    """A node restarted behind its peers may not know an adapter's account yet, and cannot ask
    a leader during the election: it answers 503, and those attempts count as no failure, or
    valid credentials would be backed off (429) once the leader is back. A wrong password for
    an account it does know still counts."""

    async def scenario() -> None:
        a, _ = _authenticator()

        async def no_leader() -> None:
            raise Unavailable("This node has no connection to a Raft leader.", retry_after=0.5)

        a.recheck = no_leader
        late = basic("adapter7", "valid-elsewhere")
        for _ in range(5):  # more than failures_before_backoff = 3
            with pytest.raises(Unavailable):
                await a.authenticate(_header(late), "10.0.0.7")
        with pytest.raises(Unavailable):  # still not 429: nothing was ever checked
            await a.authenticate(_header(late), "10.0.0.7")
        for _ in range(3):  # a known account: the password was checked, and it is wrong
            with pytest.raises(Unavailable):
                await a.authenticate(_header(basic(PLC[0], "guess")), "10.6.6.6")
        assert await _attempt(a, basic(*PLC), "10.0.0.1") == "429"

        # Any failed barrier (a timeout, no member key yet after a restart) is the same: 503.
        b, _ = _authenticator()

        async def timed_out() -> None:
            raise TimeoutError

        b.recheck = timed_out
        for _ in range(5):
            with pytest.raises(Unavailable):
                await b.authenticate(_header(late), "10.0.0.7")
        with pytest.raises(Unavailable):
            await b.authenticate(_header(late), "10.0.0.7")

    asyncio.run(scenario())


def test_many_adapters_sharing_an_account_after_a_restart_are_not_backed_off() -> None:
    """After a full restart no credential is cached, and every adapter of a plant sends its
    first heartbeat at once, most with the same account: their concurrent checks of the same
    header are one verification, not attempts reserved as failures until they succeed (which
    answered a valid adapter 429 in the compose down/up test). A wrong password sent as often
    still counts and backs off."""

    async def scenario() -> None:
        a, _ = _authenticator()  # failures_before_backoff = 3
        outcomes = await asyncio.gather(
            *(_attempt(a, basic(*PLC), f"10.0.0.{i}") for i in range(12))
        )
        assert outcomes == ["ok"] * 12
        assert a.hashes_computed == 1
        wrong = basic(PLC[0], "guess")
        guesses = await asyncio.gather(*(_attempt(a, wrong, "10.6.6.6") for _ in range(12)))
        assert set(guesses) == {"401"}  # one check, its answer for all the same header
        for _ in range(3):  # sent one after the other, each is its own attempt
            await _attempt(a, basic(PLC[0], "guess-again"), "10.6.6.6")
        assert await _attempt(a, basic(PLC[0], "yet-another"), "10.6.6.6") == "429"

    asyncio.run(scenario())


def test_failures_count_per_source_across_accounts() -> None:
    async def scenario() -> None:
        a, now = _authenticator(source_failures_before_backoff=4)
        for i in range(4):  # spraying four accounts, one guess each
            assert await _attempt(a, basic(f"user{i}", "guess"), "10.0.0.1") == "401"
        assert await _attempt(a, basic(*PLC), "10.0.0.1") == "429"
        assert await _attempt(a, basic(*PLC), "10.0.0.2") == "ok"
        now[0] += 1.01  # the first wait is 1 s
        assert await _attempt(a, basic_variant(*PLC), "10.0.0.1") == "ok"

    asyncio.run(scenario())


def test_verified_credentials_whose_cache_entry_expired_do_not_wait() -> None:
    async def scenario() -> None:
        a, now = _authenticator(credential_cache_seconds=0.5)
        assert await _attempt(a, basic(*PLC), "10.0.0.1") == "ok"
        for _ in range(3):  # plc's account must now wait 1 s
            assert await _attempt(a, basic(PLC[0], "guess"), "10.6.6.6") == "401"
        now[0] += 0.6  # the cache entry expired; the back-off has not
        before = a.hashes_computed
        assert await _attempt(a, basic(*PLC), "10.0.0.1") == "ok"  # re-verified, not refused
        assert a.hashes_computed == before + 1
        assert await _attempt(a, basic_variant(*PLC), "10.0.0.1") == "429"  # never verified

    asyncio.run(scenario())


def test_client_address_trusts_forwarded_for_only_from_trusted_proxies() -> None:
    def xff(*values: str) -> list[tuple[bytes, bytes]]:
        return [(b"x-forwarded-for", v.encode()) for v in values]

    none = ClientAddress([])
    assert none.of("10.0.0.5", xff("192.0.2.1")) == "10.0.0.5"
    proxies = ClientAddress(["10.0.0.5/32", "10.1.0.0/16"])
    assert proxies.of("10.0.0.5", xff("192.0.2.1")) == "192.0.2.1"
    assert proxies.of("10.0.0.5", []) == "10.0.0.5"
    assert proxies.of("10.9.9.9", xff("192.0.2.1")) == "10.9.9.9"  # not a proxy: ignored
    # The client may send its own header: only the right-most untrusted entry counts.
    assert proxies.of("10.0.0.5", xff("1.1.1.1, 192.0.2.1")) == "192.0.2.1"
    assert proxies.of("10.0.0.5", xff("1.1.1.1", "192.0.2.1, 10.1.2.3")) == "192.0.2.1"
    assert proxies.of("10.0.0.5", xff("[2001:db8::1]:443")) == "2001:db8::1"
    assert proxies.of("10.0.0.5", xff("192.0.2.1:5555")) == "192.0.2.1"
    assert proxies.of("10.0.0.5", xff("1.1.1.1, garbage")) == "10.0.0.5"
    assert proxies.of("10.0.0.5", xff("garbage, 10.1.2.3")) == "10.1.2.3"


# --------------------------------------------------------------------------- in-process node


@asynccontextmanager
async def _node(tmp_path: Path, **security: Any) -> AsyncIterator[tuple[Node, Any]]:
    settings = settings_for(tmp_path, bootstrap_admin=f"{ADMIN[0]}:{ADMIN[1]}", **security)
    node = Node(settings)
    app = create_app(node)
    await node.start()
    try:
        async with _client(app, "127.0.0.1") as client:
            await until(lambda: _ready(client), "node ready")
            await until(lambda: _has_users(node), "bootstrap admin")
            plc = {"Name": PLC[0], "Password": PLC[1], "Role": "users"}
            added = await client.post("/api/v1/users", json=plc, headers=basic(*ADMIN))
            assert added.status_code == 201, added.text
        yield node, app
    finally:
        await node.stop()


def _client(app: Any, source: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(source, 4321))
    return httpx.AsyncClient(transport=transport, base_url="http://cfs")


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def _has_users(node: Node) -> bool:
    return bool(node.users())


def test_parallel_guesses_are_counted_before_they_are_hashed(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with (
            _node(tmp_path, failures_before_backoff=5) as (node, app),
            _client(app, "10.6.6.6") as attacker,
        ):
            before = node.auth.hashes_computed
            guesses = [basic(ADMIN[0], f"guess-{i}") for i in range(20)]
            answers = await asyncio.gather(*(attacker.get(GROUPS, headers=g) for g in guesses))
            statuses = sorted(a.status_code for a in answers)
            assert statuses == [401] * 5 + [429] * 15
            assert node.auth.hashes_computed - before == 5

    asyncio.run(scenario())


def test_valid_cached_basic_and_bearer_are_never_refused_from_a_blocked_source(
    tmp_path: Path,
) -> None:
    """Behind one proxy every adapter shares a source: someone guessing there (even at the
    adapters' own accounts) must not lock out adapters whose credentials are verified."""

    async def scenario() -> None:
        async with (
            _node(tmp_path, failures_before_backoff=5) as (_, app),
            _client(app, "10.0.0.1") as proxy,
        ):
            admin = basic(*ADMIN)
            made = await proxy.post(
                "/api/v1/clients", json={"ClientId": "plc-7", "Role": "users"}, headers=admin
            )
            form = f"grant_type=client_credentials&client_id=plc-7&client_secret={made.json()['ClientSecret']}"
            issued = await proxy.post(TOKEN, content=form.encode(), headers=FORM)
            token = bearer(issued.json()["access_token"])
            group = {"Id": "g", "FailoverTimeout": "00:00:30"}
            assert (await proxy.post(GROUPS, json=group, headers=basic(*PLC))).status_code == 201
            sessions = f"{GROUPS}/g/clientsessions"
            await proxy.post(sessions, json={"Id": "s"}, headers=basic(*PLC))
            for name in (PLC[0], PLC[0], PLC[0], PLC[0], PLC[0], "x", "y"):
                await proxy.get(GROUPS, headers=basic(name, "guess"))  # plc's account too
            assert_error(await proxy.get(GROUPS, headers=basic_variant(*PLC)), 429)  # blocked
            beat = f"{sessions}/s/heartbeat"
            for credentials in (basic(*PLC), token):
                answer = await proxy.post(beat, json={"FailoverScore": 1}, headers=credentials)
                assert answer.status_code == 200, answer.text
                assert (await proxy.get(GROUPS, headers=credentials)).status_code == 200

    asyncio.run(scenario())


def test_forwarded_for_is_honoured_only_from_trusted_proxies(tmp_path: Path) -> None:
    async def scenario() -> None:
        settings = {"source_failures_before_backoff": 3, "trusted_proxies": ("10.0.0.1/32",)}
        async with _node(tmp_path, **settings) as (_, app):
            async with _client(app, "10.0.0.1") as proxy:
                sprayer = {"X-Forwarded-For": "192.0.2.66"}
                for name in ("a", "b", "c"):
                    await proxy.get(GROUPS, headers={**basic(name, "guess"), **sprayer})
                refused = await proxy.get(GROUPS, headers={**basic(*PLC), **sprayer})
                assert_error(refused, 429)
                adapter = {"X-Forwarded-For": "192.0.2.7"}  # another client behind the proxy
                allowed = await proxy.get(GROUPS, headers={**basic(*PLC), **adapter})
                assert allowed.status_code == 200, allowed.text
            async with _client(app, "10.0.0.2") as direct:  # not a proxy: its header is ignored
                for i, name in enumerate(("d", "e", "f")):
                    spoofed = {"X-Forwarded-For": f"198.51.100.{i}"}
                    await direct.get(GROUPS, headers={**basic(name, "guess"), **spoofed})
                spoofed = {"X-Forwarded-For": "198.51.100.99"}
                refused = await direct.get(GROUPS, headers={**basic_variant(*PLC), **spoofed})
                assert_error(refused, 429)

    asyncio.run(scenario())


def test_token_endpoint_hashes_for_unknown_client_ids(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _node(tmp_path) as (node, app), _client(app, "127.0.0.1") as client:
            made = await client.post(
                "/api/v1/clients", json={"ClientId": "plc-7"}, headers=basic(*ADMIN)
            )
            assert made.status_code == 201
            for client_id in ("plc-7", "no-such-client"):
                before = node.auth.hashes_computed
                form = f"grant_type=client_credentials&client_id={client_id}&client_secret=wrong-secret-123"
                answer = await client.post(TOKEN, content=form.encode(), headers=FORM)
                assert answer.status_code == 401
                assert answer.json()["error"] == "invalid_client"
                assert node.auth.hashes_computed - before == 1, client_id

    asyncio.run(scenario())


# --------------------------------------------------------------------------- last administrator


def test_last_administrator_counts_users_and_clients_together() -> None:
    state = engine.ClusterState()
    engine.apply(state, engine.AddUser("u1", "root", roles.ADMINISTRATORS, "h"))
    engine.apply(state, engine.AddClient("c1", "ops", roles.ADMINISTRATORS, "h"))
    engine.apply(state, engine.AddClient("c2", "plc", roles.USERS, "h"))
    # Two administrators: either may go, the other is then the last one.
    assert engine.apply(state, engine.RemoveUser("r1", "root")).code == engine.Code.DELETED
    demote = engine.UpdateClient("d1", "ops", role=roles.USERS)
    assert engine.apply(state, demote).code == engine.Code.CONFLICT
    assert engine.apply(state, engine.RemoveClient("r2", "ops")).code == engine.Code.CONFLICT
    assert engine.apply(state, engine.RemoveClient("r3", "plc")).code == engine.Code.DELETED
    assert state.clients["ops"].role == roles.ADMINISTRATORS
    engine.apply(state, engine.AddUser("u2", "second", roles.ADMINISTRATORS, "h"))
    assert engine.apply(state, engine.RemoveClient("r4", "ops")).code == engine.Code.DELETED
    assert engine.apply(state, engine.RemoveUser("r5", "second")).code == engine.Code.CONFLICT
    demote = engine.UpdateUser("d2", "second", role=roles.USERS)
    assert engine.apply(state, demote).code == engine.Code.CONFLICT
    assert [u.role for u in state.users.values()] == [roles.ADMINISTRATORS]


def test_removing_the_last_administrator_client_is_409(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _node(tmp_path) as (node, app), _client(app, "127.0.0.1") as client:
            admin = basic(*ADMIN)
            made = await client.post(
                "/api/v1/clients",
                json={"ClientId": "ops", "Role": "administrators"},
                headers=admin,
            )
            form = f"grant_type=client_credentials&client_id=ops&client_secret={made.json()['ClientSecret']}"
            issued = await client.post(TOKEN, content=form.encode(), headers=FORM)
            ops = bearer(issued.json()["access_token"])
            # root may go: the client is an administrator too ...
            assert (
                await client.delete(f"/api/v1/users/{ADMIN[0]}", headers=ops)
            ).status_code == 204
            # ... and then the client is the last one.
            assert_error(await client.delete("/api/v1/clients/ops", headers=ops), 409)
            demote = await client.put("/api/v1/clients/ops", json={"Role": "users"}, headers=ops)
            assert "last administrator" in assert_error(demote, 409)["Reason"]
            assert node.replicator.state.clients["ops"].role == roles.ADMINISTRATORS

    asyncio.run(scenario())


@pytest.mark.cluster
def test_last_administrator_survives_concurrent_removals_through_two_nodes(
    tmp_path: Path,
) -> None:
    env = {"CFS_BOOTSTRAP_ADMIN": f"{ADMIN[0]}:{ADMIN[1]}"}
    with Cluster(tmp_path, size=3, env=env) as cluster:
        client, urls = cluster.client, cluster.urls
        admin = basic(*ADMIN)
        deadline = time.monotonic() + 20
        for url in urls:
            while client.get(url + "/api/v1/users", headers=admin).status_code != 200:
                assert time.monotonic() < deadline, "bootstrap administrator never applied"
                time.sleep(0.05)
        made = client.post(
            urls[0] + "/api/v1/clients",
            json={"ClientId": "ops", "Role": "administrators"},
            headers=admin,
        )
        assert made.status_code == 201, made.text
        form = {
            "grant_type": "client_credentials",
            "client_id": "ops",
            "client_secret": made.json()["ClientSecret"],
        }
        ops = bearer(client.post(urls[1] + TOKEN, data=form).json()["access_token"])
        for url in urls[1:]:  # both credentials verified (cached) where they will be used
            while client.get(url + "/api/v1/users", headers=ops).status_code != 200:
                assert time.monotonic() < deadline, "client never replicated"
                time.sleep(0.05)

        start = threading.Barrier(2)
        answers: dict[str, int] = {}

        def remove(name: str, url: str, headers: dict[str, str]) -> None:
            with httpx.Client(timeout=10) as own:
                start.wait()
                answers[name] = own.delete(url, headers=headers).status_code

        threads = [
            threading.Thread(
                target=remove, args=("root", f"{urls[1]}/api/v1/users/{ADMIN[0]}", ops)
            ),
            threading.Thread(target=remove, args=("ops", f"{urls[2]}/api/v1/clients/ops", admin)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        # One removal applies; the other is refused by the state machine (409), or by the
        # authentication of its caller if that request arrived after the first had applied.
        assert sorted(answers.values()) in ([204, 409], [204, 401]), answers
        survivor = ops if answers["root"] == 204 else admin
        for url in urls:
            while True:
                users = client.get(url + "/api/v1/users", headers=survivor)
                clients = client.get(url + "/api/v1/clients", headers=survivor)
                if users.status_code == clients.status_code == 200:
                    roles = [u["Role"] for u in users.json()] + [c["Role"] for c in clients.json()]
                    if len(roles) == 1:
                        break
                assert time.monotonic() < deadline + 30, (url, users.text, clients.text)
                time.sleep(0.05)
            assert roles == ["administrators"]
