"""Backup and restore: the file format refuses damaged input; a new cluster starts from a backup.

The cluster test takes a backup of a real 3-node cluster through `cfs backup`, seeds three empty
data directories with `cfs restore`, starts a brand-new cluster on other ports from them and
compares what the API shows.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import pickle
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.clusterkit import Cluster

from cfs_cluster import engine
from cfs_cluster.cli.main import main
from cfs_cluster.errors import BackupError
from cfs_cluster.ops import backup
from cfs_cluster.storage.snapshot import decode_snapshot

ADMIN = ("root", "backup-admin-pw")
ADAPTER = ("plc1", "plc1-pw")
API = "/api/v1/clientfailover"


def basic(name: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}


def sample_state() -> engine.ClusterState:
    state = engine.ClusterState()
    engine.apply(state, engine.CreateGroup("r1", "g1", "Line 1", None, 100_000_000))
    engine.apply(state, engine.RegisterSession("r2", "g1", "a", "Adapter A"))
    engine.apply(state, engine.AddUser("r3", "root", engine.ADMINISTRATORS, "scrypt$x"))
    return state


def sample_file(state: engine.ClusterState | None = None) -> bytes:
    info = backup.snapshot_info("n1", 3, 42, time.time())
    return backup.encode_backup(pickle.dumps(state or sample_state()), info)


def _rewrite_header(data: bytes, **changes: Any) -> bytes:
    magic, header, payload = data.split(b"\n", 2)
    fields = {**json.loads(header), **changes}
    return magic + b"\n" + json.dumps(fields).encode() + b"\n" + payload


# --------------------------------------------------------------------------- file format


def test_backup_file_round_trips() -> None:
    read = backup.read_backup(sample_file())
    assert read.info.node == "n1" and read.info.term == 3 and read.info.applied_index == 42
    assert read.state.groups["g1"].sessions["a"].name == "Adapter A"
    assert "1 groups, 1 sessions, 1 users" in read.summary()


def _malicious() -> bytes:
    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, ("echo pwned",))

    payload = gzip.compress(pickle.dumps(Evil()))
    header = {"Format": 1, "Node": "x", "Term": 1, "AppliedIndex": 1, "Time": "t"}
    header |= {"PayloadBytes": len(payload), "Sha256": hashlib.sha256(payload).hexdigest()}
    return backup.MAGIC + json.dumps(header).encode() + b"\n" + payload


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        pytest.param(lambda d: b"PK\x03\x04" + d, "not a cfs backup", id="not-a-backup"),
        pytest.param(lambda d: d[: len(d) - 10], "truncated", id="truncated-payload"),
        pytest.param(lambda d: d[:20], "header is truncated", id="truncated-header"),
        pytest.param(lambda d: d[:-5] + bytes([d[-5] ^ 1]) + d[-4:], "checksum", id="bit-flip"),
        pytest.param(lambda d: _rewrite_header(d, Format=2), "format 2", id="newer-format"),
        pytest.param(lambda d: _rewrite_header(d, Term="x"), "valid Term", id="bad-header"),
        pytest.param(lambda d: _malicious(), "not allowed", id="code-in-pickle"),
    ],
)
def test_damaged_backups_are_refused_with_a_clear_reason(damage: Any, words: str) -> None:
    with pytest.raises(BackupError, match=words):
        backup.read_backup(damage(sample_file()))


def test_a_backup_of_something_else_is_refused() -> None:
    with pytest.raises(BackupError, match="does not contain a cluster state"):
        backup.read_backup(
            backup.encode_backup(pickle.dumps({"groups": {}}), backup.snapshot_info("n", 1, 1, 0))
        )


def test_restore_refuses_a_data_dir_with_raft_history(tmp_path: Path) -> None:
    (tmp_path / "raft.journal").write_bytes(b"old")
    read = backup.read_backup(sample_file())
    with pytest.raises(BackupError, match="already holds Raft data"):
        backup.seed_data_dir(read, tmp_path, "127.0.0.1:1", ("127.0.0.1:2",))
    assert not (tmp_path / "raft.dump").exists()
    assert (tmp_path / "raft.journal").read_bytes() == b"old"


def test_restored_dump_has_pysyncobjs_layout_and_a_fresh_term(tmp_path: Path) -> None:
    state = sample_state()
    state.opened_term = 9
    state.members["n1"] = engine.Member("n1", "10.0.0.1:5690", "http://10.0.0.1:5590")
    read = backup.read_backup(sample_file(state))
    path = backup.seed_data_dir(read, tmp_path / "d", "127.0.0.1:7001", ("127.0.0.1:7002",))
    data, last, previous, cluster = decode_snapshot(path, path.read_bytes())
    restored = data[1]["state"]
    assert restored.opened_term == 0 and restored.members == {}
    assert restored.groups.keys() == {"g1"}
    assert (previous[1:], last[1:]) == ((42, 0), (43, 0))
    assert sorted(node.id for node in cluster) == ["127.0.0.1:7001", "127.0.0.1:7002"]
    assert path.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    "content",
    [pytest.param(b"", id="empty"), pytest.param(b"CFS-BACKUP\n{}", id="no-format")],
)
def test_cli_restore_of_a_bad_file_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    bad = tmp_path / "bad.cfsbak"
    bad.write_bytes(content)
    target = tmp_path / "data"
    args = ["restore", "--in", str(bad), "--data-dir", str(target), "--raft", "127.0.0.1:7001"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("cfs: ") and "Traceback" not in err
    assert not target.exists()


def test_cli_restore_into_an_unwritable_place_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.cfsbak"
    good.write_bytes(sample_file())
    (tmp_path / "file").write_text("not a directory")
    target = tmp_path / "file" / "data"
    args = ["restore", "--in", str(good), "--data-dir", str(target), "--raft", "127.0.0.1:7001"]
    assert main(args) == 2
    assert "Cannot create" in capsys.readouterr().err


def test_cli_restore_of_a_missing_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["restore", "--in", str(tmp_path / "nope"), "--check"]) == 2
    assert "Cannot read" in capsys.readouterr().err


# --------------------------------------------------------------------------- real clusters


def _ok(response: httpx.Response) -> httpx.Response:
    assert response.status_code < 300, f"{response.status_code} {response.text}"
    return response


def _populate(client: httpx.Client, urls: list[str], admin: dict[str, str]) -> None:
    groups = f"{urls[0]}{API}/groups"
    for gid, timeout in (("g1", "00:00:30"), ("g2", "00:01:00")):
        body = {"Id": gid, "Name": f"Line {gid}", "FailoverTimeout": timeout}
        _ok(client.post(groups, json=body, headers=admin))
        for sid in ("a", "b"):
            session = {"Id": sid, "Name": f"{gid}-{sid}", "AdditionalData": {"plant": 7}}
            _ok(
                client.post(
                    f"{urls[1]}{API}/groups/{gid}/clientsessions", json=session, headers=admin
                )
            )
    override = {"Value": "Primary", "ExpirationPeriod": "08:00:00"}
    _ok(
        client.post(
            f"{urls[2]}{API}/groups/g2/clientsessions/b/roleoverride", json=override, headers=admin
        )
    )
    user = {"Name": ADAPTER[0], "Password": ADAPTER[1], "Role": "users"}
    _ok(client.post(f"{urls[0]}/api/v1/users", json=user, headers=admin))
    endpoint = {
        "Id": "pi",
        "Endpoint": "https://pi.example.com/piwebapi/omf/",
        "UserName": "u",
        "Password": "p",
    }
    _ok(
        client.post(f"{urls[1]}/api/v1/configuration/healthEndpoints", json=endpoint, headers=admin)
    )
    _ok(client.put(f"{urls[2]}/api/v1/configuration/logging", json={"LogLevel": "Debug"}, headers=admin))  # fmt: skip


def _view(client: httpx.Client, url: str, auth: dict[str, str]) -> dict[str, Any]:
    """What an operator sees: groups, sessions, overrides, users, configuration."""
    groups = _ok(client.get(f"{url}{API}/groups", headers=auth)).json()
    view: dict[str, Any] = {"groups": sorted(groups, key=lambda g: g["Id"])}
    for group in groups:
        sessions = client.get(f"{url}{API}/groups/{group['Id']}/clientsessions", headers=auth)
        view[group["Id"]] = sorted(_ok(sessions).json(), key=lambda s: s["Id"])
    view["users"] = _ok(client.get(f"{url}/api/v1/users", headers=auth)).json()
    view["config"] = _ok(client.get(f"{url}/api/v1/configuration", headers=auth)).json()
    return view


def _wait_for_admin(cluster: Cluster, admin: dict[str, str]) -> None:
    deadline = time.monotonic() + 20
    for url in cluster.urls:
        while cluster.client.get(url + "/api/v1/users", headers=admin).status_code != 200:
            assert time.monotonic() < deadline, "bootstrap administrator never applied"
            time.sleep(0.05)


def _settled_view(cluster: Cluster, auth: dict[str, str]) -> dict[str, Any]:
    """Every node shows the same view (writes applied everywhere); bounded wait."""
    deadline = time.monotonic() + 15
    while True:
        views = [_view(cluster.client, url, auth) for url in cluster.urls]
        if all(v == views[0] for v in views) or time.monotonic() > deadline:
            assert all(v == views[0] for v in views), "nodes disagree"
            return views[0]
        time.sleep(0.1)


@pytest.mark.cluster
def test_new_cluster_starts_from_a_backup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = basic(*ADMIN)
    out = tmp_path / "cluster.cfsbak"
    env = {"CFS_BOOTSTRAP_ADMIN": f"{ADMIN[0]}:{ADMIN[1]}"}
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    with Cluster(tmp_path / "old", size=3, env=env) as old:
        _wait_for_admin(old, admin)
        _populate(old.client, old.urls, admin)
        before = _settled_view(old, admin)
        url = old.urls[1]
        assert old.client.get(url + backup.BACKUP_PATH).status_code == 401
        assert old.client.get(url + backup.BACKUP_PATH, headers=basic(*ADAPTER)).status_code == 403
        creds = ["--url", url, "--user", ADMIN[0], "--password", ADMIN[1]]
        assert main(["backup", *creds, "--out", str(out)]) == 0
        assert "2 groups, 4 sessions, 2 users, 1 health endpoints" in capsys.readouterr().out
    assert out.stat().st_mode & 0o077 == 0

    # Other ports, and no bootstrap admin: the restored users are the ones it enforces.
    new = Cluster(tmp_path / "new", size=3, extra_args=["--auth", "required"])
    for node in new.nodes:
        restore = ["restore", "--in", str(out), "--data-dir", str(node.data_dir)]
        assert main([*restore, "--raft", node.raft, "--peers", ",".join(node.peers)]) == 0
    with new:
        after = _settled_view(new, admin)
        assert after == before
        status = _ok(new.client.get(new.urls[0] + "/api/v1/cluster", headers=admin)).json()
        assert {m["ApiUrl"] for m in status["Members"]} == set(new.urls)  # old URLs dropped
        group = f"{new.urls[2]}{API}/groups/g1"  # the restored cluster takes writes
        _ok(new.client.post(group + "/clientsessions", json={"Id": "c"}, headers=admin))
        beat = new.client.post(
            group + "/clientsessions/c/heartbeat", json={"FailoverScore": 5}, headers=admin
        )
        assert _ok(beat).json()["Role"] in (1, 2)
    # restoring over a node that now has a history is refused, and changes nothing
    node = new.nodes[0]
    journal = (node.data_dir / "raft.journal").read_bytes()
    restore = ["restore", "--in", str(out), "--data-dir", str(node.data_dir)]
    assert main([*restore, "--raft", node.raft, "--peers", ",".join(node.peers)]) == 2
    assert "already holds Raft data" in capsys.readouterr().err
    assert (node.data_dir / "raft.journal").read_bytes() == journal


@pytest.mark.cluster
def test_one_restored_node_grows_into_a_cluster_with_add_node(tmp_path: Path) -> None:
    """The other DR procedure: restore one node alone; empty members join through Raft and
    receive the restored state as a snapshot."""
    file = tmp_path / "state.cfsbak"
    state = sample_state()
    state.users = {}  # an open cluster, so the test needs no credentials
    file.write_bytes(sample_file(state))
    cluster = Cluster(tmp_path, size=1)
    first = cluster.nodes[0]
    restore = ["restore", "--in", str(file), "--data-dir", str(first.data_dir)]
    assert main([*restore, "--raft", first.raft]) == 0
    with cluster:
        for _ in range(2):
            index = cluster.spawn()
            raft = cluster.nodes[index].raft
            added = cluster.client.post(
                first.url + "/api/v1/cluster/members", json={"Raft": raft}, timeout=60
            )
            assert added.status_code == 201, added.text
            cluster.wait_ready(nodes=[index])
        for node in cluster.nodes:
            sessions = cluster.client.get(f"{node.url}{API}/groups/g1/clientsessions")
            assert [s["Name"] for s in _ok(sessions).json()] == ["Adapter A"], node.node_id
