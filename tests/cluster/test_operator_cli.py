"""The operator CLI against a real 3-node cluster (issue 17): the failover domain
(`cfs groups|sessions|override|events|watch`), `cfs cluster status|health|transfer-leader`,
`cfs simulate` with node URLs, one way to give credentials (CFS_URL/CFS_USER/CFS_PASSWORD, a
profile file), and errors a person can act on.

Credentials come only from the environment in the domain tests (``env_creds``), and CFS_URL
lists an unreachable node first, so every one of them also checks that the list is tried in
order.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.clusterkit import Cluster, free_ports

from cfs_cluster import __version__
from cfs_cluster.cli.main import main

pytestmark = pytest.mark.cluster

ADMIN = ("root", "operator-secret")
ADAPTER = ("plc", "adapter-secret")
ROOT = "/api/v1/clientfailover/groups"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    env = {"CFS_BOOTSTRAP_ADMIN": f"{ADMIN[0]}:{ADMIN[1]}"}
    base = tmp_path_factory.mktemp("cli-cluster")
    with (
        Cluster(base, size=3, extra_args=["--auth", "required"], env=env) as running,
        httpx.Client(auth=ADMIN, timeout=10) as admin,
    ):
        deadline = time.monotonic() + 20
        while admin.get(running.urls[0] + ROOT).status_code != 200:
            assert time.monotonic() < deadline, "the bootstrap administrator was never applied"
            time.sleep(0.1)
        user = {"Name": ADAPTER[0], "Password": ADAPTER[1], "Role": "users"}
        added = admin.post(running.urls[0] + "/api/v1/users", json=user)
        assert added.status_code == 201, added.text
        yield running


@pytest.fixture
def admin() -> Iterator[httpx.Client]:
    with httpx.Client(auth=ADMIN, timeout=10) as client:
        yield client


@pytest.fixture
def dead_url() -> str:
    return f"http://127.0.0.1:{free_ports(1)[0]}"


@pytest.fixture
def env_creds(
    cluster: Cluster, dead_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> dict[str, str]:
    """Credentials only in the environment; the first URL of the list does not answer."""
    env = {
        "CFS_URL": ",".join([dead_url, *cluster.urls[1:]]),
        "CFS_USER": ADMIN[0],
        "CFS_PASSWORD": ADMIN[1],
        "CFS_CONFIG": str(tmp_path / "no-profile.toml"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CFS_CACERT", raising=False)
    return env


def cfs(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def cfs_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = cfs(capsys, *argv, "--output", "json")
    assert code == 0, err
    return json.loads(out)


def beat(
    cluster: Cluster, group: str, session: str, score: float, held: tuple[int, int] | None = None
) -> int:
    """One heartbeat as an adapter; the answered role. ``held`` = (HeldRole, HeldEpoch): what
    the adapter acts on, as our agent reports it (AVEVA adapters never send it)."""
    path = f"{ROOT}/{group}/clientsessions/{session}/heartbeat"
    body: dict[str, Any] = {"FailoverScore": score}
    if held is not None:
        body["HeldRole"], body["HeldEpoch"] = held
    with httpx.Client(auth=ADAPTER, timeout=10) as client:
        answer = client.post(cluster.urls[0] + path, json=body)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["Role"])


def make_primary(cluster: Cluster, group: str, session: str, score: float) -> None:
    """Heartbeats until the session is Primary: a candidate among several is told
    PendingPrimary first and granted at its next heartbeat."""
    for _ in range(3):
        if beat(cluster, group, session, score) == 1:
            return
    raise AssertionError(f"{session} never became Primary of {group}")


def register(cluster: Cluster, group: str, *sessions: str) -> None:
    with httpx.Client(auth=ADAPTER, timeout=10) as client:
        for session in sessions:
            made = client.post(
                f"{cluster.urls[0]}{ROOT}/{group}/clientsessions", json={"Id": session}
            )
            assert made.status_code in (200, 201), made.text


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------- groups


def test_groups_create_list_show_in_table_and_json(
    cluster: Cluster,
    admin: httpx.Client,
    env_creds: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = cfs(capsys, "groups", "create", "line1", "--timeout", "00:00:30")
    assert code == 0, err
    assert out.strip() == "group line1 ready (FailoverTimeout 00:00:30)"
    register(cluster, "line1", "a", "b")
    make_primary(cluster, "line1", "a", 100)
    assert beat(cluster, "line1", "b", 90) == 0

    listed = {g["Id"]: g for g in cfs_json(capsys, "groups", "list")}
    status = admin.get(cluster.urls[0] + ROOT + "/line1/status").json()
    assert listed["line1"]["Status"] == status
    assert listed["line1"]["Sessions"] == 2
    assert listed["line1"]["FailoverTimeout"] == "00:00:30"
    assert status["Primary"] == "a"

    code, out, _ = cfs(capsys, "groups", "list")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == [
        "Id",
        "Timeout",
        "Sessions",
        "Primary",
        "Pending",
        "Epoch",
        "LastData",
    ]
    row = next(r.split() for r in rows if r.startswith("line1 "))
    assert row[:6] == ["line1", "00:00:30", "2", "a", "-", str(status["Epoch"])]
    assert max(len(line) for line in out.splitlines()) <= 80

    shown = cfs_json(capsys, "groups", "show", "line1")
    assert shown["Id"] == "line1"
    assert shown["Status"] == status
    assert {s["Id"]: s["Role"] for s in shown["Sessions"]} == {"a": 1, "b": 0}

    # Sessions' last heartbeats reach the replicated state with the leader's next checkpoint.
    deadline = time.monotonic() + 15
    while not all(s["Heartbeat"] for s in cfs_json(capsys, "groups", "show", "line1")["Sessions"]):
        assert time.monotonic() < deadline, "no heartbeat checkpoint"
        time.sleep(0.2)
    code, out, _ = cfs(capsys, "groups", "show", "line1")
    assert code == 0
    assert out.startswith("group line1  timeout 00:00:30  primary a  pending -")
    sessions = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert sessions["a"][1:3] == ["Primary", "100.0"]
    assert sessions["b"][1:3] == ["Secondary", "90.0"]
    assert re.fullmatch(r"\d+\.\d s ago", " ".join(sessions["a"][3:6])), sessions["a"]

    # The same configuration again is not an error; another timeout is refused (409, exit 1).
    assert cfs(capsys, "groups", "create", "line1", "--timeout", "00:00:30")[0] == 0
    code, _, err = cfs(capsys, "groups", "create", "line1", "--timeout", "00:00:10")
    assert code == 1
    assert one_line_error(err).startswith("cfs groups: 409 ")


def test_override_moved_and_cleared_then_the_events(
    cluster: Cluster,
    admin: httpx.Client,
    env_creds: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cfs(capsys, "groups", "create", "line2", "--timeout", "00:00:30")[0] == 0
    register(cluster, "line2", "a", "b")
    make_primary(cluster, "line2", "a", 100)
    assert beat(cluster, "line2", "b", 50) == 0

    code, out, err = cfs(capsys, "override", "set", "line2", "b", "--for", "00:10:00")
    assert code == 0, err
    assert "b is PendingPrimary in line2" in out
    assert "becomes Primary once the current Primary" in out
    # P1: the holder is answered Secondary, but the target is granted only once the holder
    # acknowledges it acts on no grant (or its last grant lapsed): being *sent* Secondary
    # releases nothing, that answer may be lost.
    epoch = admin.get(cluster.urls[1] + ROOT + "/line2/status").json()["Epoch"]
    assert beat(cluster, "line2", "a", 100) == 0
    assert beat(cluster, "line2", "b", 50) == 2
    assert beat(cluster, "line2", "a", 100, held=(0, epoch)) == 0
    assert beat(cluster, "line2", "b", 50) == 1
    session = cfs_json(capsys, "groups", "show", "line2")["Sessions"]
    b = next(s for s in session if s["Id"] == "b")
    assert (b["Role"], b["RoleOverride"]) == (1, 1)
    assert b["RoleOverrideExpirationTime"] is not None

    events = cfs_json(capsys, "events", "line2")
    api = admin.get(cluster.urls[2] + ROOT + "/line2/events").json()
    assert events == api
    moves = [(e["OldPrimary"], e["NewPrimary"], e["PendingPrimary"]) for e in events]
    # Granted; asked to step down with b pending; b granted once a acknowledged.
    assert moves == [(None, "a", None), ("a", None, "b"), (None, "b", None)]
    assert [e["Sequence"] for e in events] == [1, 2, 3]
    assert "step down" in events[1]["Reason"], events[1]
    assert "acknowledged" in events[2]["Reason"], events[2]
    assert all("override" in e["Reason"].lower() for e in events[1:]), events
    assert all(e["Reason"] and isinstance(e["Scores"], dict) for e in events)

    code, out, _ = cfs(capsys, "events", "line2")
    assert code == 0
    assert out.splitlines()[0].split() == ["Time", "Epoch", "Primary", "Pending", "Reason"]
    assert "- -> a" in out and "a -> -" in out and "- -> b" in out

    answer = cfs_json(capsys, "override", "clear", "line2", "b")
    assert answer == {"Value": 0, "RoleOverrideExpirationTime": None}
    shown = cfs_json(capsys, "groups", "show", "line2")
    assert all(s["RoleOverride"] == 0 for s in shown["Sessions"])


def test_events_follow_streams_new_decisions(
    cluster: Cluster,
    admin: httpx.Client,
    env_creds: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cfs(capsys, "groups", "create", "line3", "--timeout", "00:00:30")[0] == 0
    register(cluster, "line3", "a", "b")
    make_primary(cluster, "line3", "a", 100)
    follow = _cfs_process("events", "line3", "--follow", "--count", "1", "-o", "json")
    try:
        assert follow.stdout is not None
        first = json.loads(follow.stdout.readline())  # the history, before the change
        assert (first["NewPrimary"], first["Sequence"]) == ("a", 1)
        deleted = admin.delete(cluster.urls[1] + ROOT + "/line3/clientsessions/a")
        assert deleted.status_code == 204
        out, err = follow.communicate(timeout=60)
    finally:
        follow.kill()
        follow.wait()
    assert follow.returncode == 0, err
    new = json.loads(out)
    assert (new["OldPrimary"], new["NewPrimary"], new["Sequence"]) == ("a", None, 2)
    assert new["Reason"] == "Client 'a' was deleted"


def test_events_long_poll_api(cluster: Cluster, admin: httpx.Client) -> None:
    assert (
        admin.post(
            cluster.urls[0] + ROOT, json={"Id": "poll", "FailoverTimeout": "00:00:30"}
        ).status_code
        == 201
    )
    register(cluster, "poll", "a")
    url = cluster.urls[2] + ROOT + "/poll/events"
    assert admin.get(url, params={"after": "0"}).json() == []
    for bad in ({"after": "-1"}, {"after": "x"}, {"waitFor": "61"}, {"waitFor": "nan"}):
        refused = admin.get(url, params=bad)
        assert refused.status_code == 400, (bad, refused.text)
        assert set(refused.json()["AdditionalParameters"]) == set(bad)
    with httpx.Client(auth=ADMIN, timeout=30) as poller:
        started = time.monotonic()
        # Held on a follower until the heartbeat's decision is applied there.
        import threading

        answer: list[httpx.Response] = []
        waiting = threading.Thread(
            target=lambda: answer.append(poller.get(url, params={"after": "0", "waitFor": "20"}))
        )
        waiting.start()
        assert beat(cluster, "poll", "a", 100) == 1
        waiting.join(timeout=30)
    assert answer and answer[0].status_code == 200
    assert [e["NewPrimary"] for e in answer[0].json()] == ["a"]
    assert time.monotonic() - started < 20  # answered by the event, not the timeout
    assert admin.get(url, params={"after": "1", "waitFor": "0"}).json() == []
    assert admin.get(cluster.urls[0] + ROOT + "/nope/events").status_code == 404


def test_watch_prints_a_new_view_on_change(
    cluster: Cluster, env_creds: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    watch = _cfs_process("watch", "-o", "json", "--count", "2", "--interval", "0.2")
    try:
        assert watch.stdout is not None
        before = {g["Id"] for g in json.loads(watch.stdout.readline())}
        assert "line4" not in before
        assert cfs(capsys, "groups", "create", "line4", "--timeout", "00:00:30")[0] == 0
        out, err = watch.communicate(timeout=60)
    finally:
        watch.kill()
        watch.wait()
    assert watch.returncode == 0, err
    after = {g["Id"]: g for g in json.loads(out)}
    assert after["line4"]["Sessions"] == 0 and after["line4"]["Status"]["Primary"] is None

    table = _cfs_process("watch", "line4", "--count", "1")
    out, err = table.communicate(timeout=60)
    assert table.returncode == 0, err
    assert out.startswith("group line4  timeout 00:00:30  primary -")


def test_sessions_and_groups_delete(
    cluster: Cluster, env_creds: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cfs(capsys, "groups", "create", "line5", "--timeout", "00:00:30")[0] == 0
    register(cluster, "line5", "a")
    code, _, err = cfs(capsys, "groups", "delete", "line5")
    assert code == 1
    assert one_line_error(err).startswith("cfs groups: 409 ")
    code, out, err = cfs(capsys, "sessions", "delete", "line5", "a")
    assert (code, out.strip()) == (0, "deleted session a of group line5"), err
    assert cfs_json(capsys, "groups", "delete", "line5") == {"Result": "deleted"}
    code, _, err = cfs(capsys, "groups", "show", "line5")
    assert code == 1
    assert one_line_error(err) == "cfs groups: 404 Failover group 'line5' was not found."


# --------------------------------------------------------------------------- cluster


def test_cluster_status_health_and_transfer_leader(
    cluster: Cluster, env_creds: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    status = cfs_json(capsys, "cluster", "status")
    assert status["Version"] == __version__
    assert status["ApiUrl"] in cluster.urls
    assert status["Tls"] == {"Enabled": False}
    assert all(m["Lag"] is not None for m in status["Members"])
    code, out, _ = cfs(capsys, "cluster", "status")
    assert code == 0
    assert f"version {__version__}  api {status['ApiUrl']}  tls off" in out
    for url in cluster.urls:
        assert url in out

    health = cfs_json(capsys, "cluster", "health")
    assert sorted(m["Id"] for m in health) == ["n1", "n2", "n3"]
    assert all(m["Reachable"] and m["Ready"] and m["Version"] == __version__ for m in health)
    assert sum(m["Leader"] for m in health) == 1
    assert all(m["Tls"] == {"Enabled": False} and m["Lag"] is not None for m in health)
    code, out, _ = cfs(capsys, "cluster", "health")
    assert code == 0
    assert out.splitlines()[0].split() == [
        "Id", "API", "URL", "Reach", "Ready", "Leader", "Lag", "TLS", "Version"
    ]  # fmt: skip

    leader = next(m["Id"] for m in health if m["Leader"])
    target = next(n for n in ("n1", "n2", "n3") if n != leader)
    code, out, err = cfs(capsys, "cluster", "transfer-leader", "--to", target)
    assert code == 0, err
    assert out.strip() == f"transferred {target}; voters: n1, n2, n3; leader: {target}"
    cluster.wait_ready()


def test_cluster_health_reports_a_stopped_member(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Cluster(tmp_path, size=3) as small:
        small.nodes[2].terminate()
        code, out, _ = cfs(capsys, "cluster", "health", "--url", small.urls[0], "-o", "json")
    assert code == 1
    by_id = {m["Id"]: m for m in json.loads(out)}
    assert by_id["n3"]["Reachable"] is False and "cannot reach" in by_id["n3"]["Error"]
    assert by_id["n1"]["Reachable"] and by_id["n2"]["Reachable"]


# --------------------------------------------------------------------------- errors


def test_errors_a_person_can_act_on(
    cluster: Cluster,
    dead_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("CFS_URL", "CFS_USER", "CFS_PASSWORD", "CFS_CACERT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CFS_CONFIG", "/nonexistent/cli.toml")
    url = cluster.urls[0]

    code, _, err = cfs(capsys, "groups", "list", "--url", dead_url)
    assert code == 1
    assert one_line_error(err).startswith(f"cfs groups: cannot reach {dead_url} (")
    assert err.strip().endswith("is the node running, and is --url (CFS_URL) right?")

    code, _, err = cfs(
        capsys, "groups", "list", "--url", url, "--user", "root", "--password", "wrong"
    )
    assert code == 1
    assert one_line_error(err) == (
        "cfs groups: 401 The user name or password is wrong. "
        f"(user 'root' at {url}{ROOT}): check --user/--password."
    )

    code, _, err = cfs(capsys, "groups", "list", "--url", url)
    assert code == 1
    assert one_line_error(err) == (
        "cfs groups: 401 No credentials were sent. "
        "Give --user and --password (or CFS_USER and CFS_PASSWORD)."
    )

    adapter = ["--url", url, "--user", ADAPTER[0], "--password", ADAPTER[1]]
    code, _, err = cfs(capsys, "override", "clear", "any", "any", *adapter)
    assert code == 1
    assert one_line_error(err) == (
        "cfs override: 403 'plc' is not in the administrators role. "
        "Use an account of the role this command needs (--user)."
    )

    code, _, err = cfs(capsys, "groups", "list", "--url", url + "/wrong/path", *adapter[2:])
    assert code == 1
    assert "is --url a node's base URL (no path)?" in one_line_error(err)

    code, _, err = cfs(capsys, "groups", "list", "--url", "node1:5590")
    assert code == 2
    assert one_line_error(err) == (
        "cfs groups: 'node1:5590' is not an http:// or https:// URL (--url, CFS_URL)"
    )
    code, _, err = cfs(capsys, "groups", "create", "g", "--timeout", "soon", *adapter)
    assert code == 2
    assert "--timeout 'soon' is not a TimeSpan" in one_line_error(err)
    with pytest.raises(SystemExit) as usage:
        main(["groups", "frobnicate"])
    assert usage.value.code == 2


def test_a_node_without_users_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Started with --peers and no administrator: allowed, and nobody can log in yet.
    with Cluster(tmp_path, size=3, extra_args=["--auth", "required"]) as lone:
        creds = ["--url", lone.urls[0], "--user", "root", "--password", "right-elsewhere"]
        code, _, err = cfs(capsys, "groups", "list", *creds)
        assert code == 1
        assert one_line_error(err) == (
            "cfs groups: 401 This node has no users yet: it has not joined the cluster "
            "(cfs cluster add-node) or no administrator was created (CFS_BOOTSTRAP_ADMIN)."
        )
        answer = lone.client.get(lone.urls[0] + ROOT, auth=("root", "x"))
        assert answer.status_code == 401
        assert answer.json()["Reason"].startswith("This node has no users yet")


def test_tls_errors_suggest_cacert_or_insecure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CFS_CONFIG", str(tmp_path / "none.toml"))
    with Cluster(tmp_path, size=1, extra_args=["--tls", "self-signed"]) as tls:
        url = tls.urls[0]
        code, _, err = cfs(capsys, "groups", "list", "--url", url)
        assert code == 1
        line = one_line_error(err)
        assert line.startswith(f"cfs groups: TLS verification of {url} failed (")
        assert line.endswith(
            "give its CA or certificate with --cacert FILE (CFS_CACERT), or --insecure"
        )
        certificate = tls.nodes[0].data_dir / "certificates" / "n1.crt"
        assert cfs(capsys, "groups", "list", "--url", url, "--insecure")[0] == 0
        monkeypatch.setenv("CFS_CACERT", str(certificate))
        code, out, err = cfs(capsys, "cluster", "status", "--url", url, "-o", "json")
        assert code == 0, err
        assert json.loads(out)["Tls"]["Enabled"] is True
        code, out, _ = cfs(capsys, "cluster", "health", "--url", url)
        assert code == 0
        assert re.search(r"\d{4}-\d\d-\d\d", out)  # the certificate's expiry
        code, _, err = cfs(capsys, "groups", "list", "--url", url.replace("https", "http"))
        assert code == 1
        assert "if the node serves HTTPS, use https://" in one_line_error(err)


# --------------------------------------------------------------------------- simulate


def test_simulate_with_plain_node_urls_and_env_credentials(cluster: Cluster, dead_url: str) -> None:
    env = {"CFS_URL": ",".join(cluster.urls), "CFS_USER": ADAPTER[0], "CFS_PASSWORD": ADAPTER[1]}
    done = _run_cfs(env, "simulate", "--timeout", "00:00:02", "--duration", "3", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["settings"]["endpoints"] == [u + "/api/v1/clientfailover" for u in cluster.urls]
    hot = summary["modes"]["hot"]
    assert (hot["values_per_group"], hot["gaps"], hot["failovers"]) == (3, 0, 0)


@pytest.mark.parametrize(
    ("password", "path", "status"),
    [("wrong", "", "401"), (ADAPTER[1], "/not/the/endpoint", "404")],
)
def test_simulate_stops_at_once_when_registration_is_refused(
    cluster: Cluster, password: str, path: str, status: str
) -> None:
    env = {"CFS_URL": cluster.urls[0] + path, "CFS_USER": ADAPTER[0], "CFS_PASSWORD": password}
    started = time.monotonic()
    done = _run_cfs(env, "simulate", "--timeout", "00:00:02", "--duration", "30")
    assert time.monotonic() - started < 20  # not the 30 s run
    assert done.returncode == 1, done.stdout
    assert one_line_error(done.stderr).startswith(f"cfs simulate: registration refused: {status} ")


def test_simulate_keeps_the_old_option_names(cluster: Cluster) -> None:
    done = _run_cfs(
        {},
        "simulate", "--endpoint", cluster.urls[0], "--username", ADAPTER[0],
        "--password", "wrong", "--duration", "5",
    )  # fmt: skip
    assert done.returncode == 1
    assert "registration refused: 401" in done.stderr


# --------------------------------------------------------------------------- profile


def test_credentials_from_a_profile_file_lose_to_env_and_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cfs_cluster.cli.connect import credentials

    profile = tmp_path / "cli.toml"
    profile.write_text(
        'url = "https://a:5590,https://b:5590"\nuser = "ops"\npassword = "p"\n'
        'cacert = "/etc/cfs/ca.pem"\n'
    )
    profile.chmod(0o600)
    monkeypatch.setenv("CFS_CONFIG", str(profile))
    for name in ("CFS_URL", "CFS_USER", "CFS_PASSWORD", "CFS_CACERT"):
        monkeypatch.delenv(name, raising=False)
    import argparse

    got = credentials(argparse.Namespace())
    assert (got.urls, got.user, got.password, got.cacert) == (
        ("https://a:5590", "https://b:5590"), "ops", "p", "/etc/cfs/ca.pem"
    )  # fmt: skip
    monkeypatch.setenv("CFS_USER", "env-user")
    assert credentials(argparse.Namespace()).user == "env-user"
    assert credentials(argparse.Namespace(user="flag-user")).user == "flag-user"
    profile.chmod(0o644)  # readable by others: its password is ignored, as .pgpass does
    assert credentials(argparse.Namespace()).password is None


# --------------------------------------------------------------------------- the node


def test_offline_docs_and_redoc(cluster: Cluster, admin: httpx.Client) -> None:
    for page in ("/docs", "/redoc"):
        html = admin.get(cluster.urls[0] + page)
        assert html.status_code == 200, html.text
        assert not re.search(r"https?://", html.text), re.findall(r"https?://\S+", html.text)
        assets = re.findall(r"""(?:src|href)=["']?([^"' >]+)""", html.text)
        assets += re.findall(r"""url: ?['"]([^'"]+)""", html.text)
        assert any(a.endswith(".js") for a in assets), assets
        if page == "/docs":  # no validator badge from validator.swagger.io either
            assert '"validatorUrl": null' in html.text
        for asset in assets:
            fetched = admin.get(cluster.urls[0] + asset)
            assert fetched.status_code == 200, (page, asset)


def test_serve_logs_a_summary_and_refuses_a_wildcard_without_advertise_url(
    cluster: Cluster, tmp_path: Path
) -> None:
    log = (cluster.nodes[0].log_path).read_text()
    node = cluster.nodes[0]
    assert (
        f"cfs {__version__} node n1: api 127.0.0.1:{node.api_port}, raft {node.raft}, "
        f"advertised {node.url}, peers {','.join(node.peers)}, auth required, tls off, "
        f"data dir {node.data_dir.resolve()}, DEV mode (no Raft password)"
    ) in log
    port = free_ports(1)[0]
    # Protected as a node beyond loopback must be (Raft password, administrator): only the
    # missing --advertise-url is wrong.
    protected = {"CFS_RAFT_PASSWORD": "a-long-raft-secret", "CFS_BOOTSTRAP_ADMIN": "root:pw"}
    serve = ["serve", "--node-id", "x", "--data-dir", str(tmp_path / "x")]
    for host in ("0.0.0.0", "[::]"):
        done = _run_cfs(protected, *serve, "--api", f"{host}:{port}")
        assert done.returncode == 2
        assert one_line_error(done.stderr).startswith(
            f"cfs: --api {host}:{port} listens on every interface"
        )
        assert "give --advertise-url (CFS_ADVERTISE_URL)" in done.stderr
    shown = " ".join(_run_cfs({}, "serve", "--help").stdout.split())
    assert "[CFS_API] (default: 127.0.0.1:5590)" in shown and "[CFS_DEV=1]" in shown
    assert "(default: 0.0)" in shown  # a zero default is a default too


# --------------------------------------------------------------------------- helpers


def _cfs_process(*argv: str) -> subprocess.Popen[str]:
    """`cfs ARGV` in a child with the test's environment (the env_creds credentials)."""
    return subprocess.Popen(
        [sys.executable, "-m", "cfs_cluster", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )


def _run_cfs(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CFS_")}
    return subprocess.run(
        [sys.executable, "-m", "cfs_cluster", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, "CFS_CONFIG": "/nonexistent/cli.toml", **env},
    )


def test_every_serve_option_names_its_environment_variable() -> None:
    import argparse

    from cfs_cluster.cli import serve as cli

    parser = argparse.ArgumentParser()
    cli.serve_parser(parser.add_subparsers())
    serve = parser._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    options = [a for a in serve._actions if a.option_strings and a.dest != "help"]
    missing = [a.option_strings[0] for a in options if "[CFS_" not in (a.help or "")]
    assert options and not missing
