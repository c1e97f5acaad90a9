"""deploy/: the systemd unit and the Kubernetes manifests users take, checked without a cluster.

- deploy/systemd/cfs.service passes `systemd-analyze verify` with no complaint about the unit
  (the check is seen to catch a misspelt option and a bad value), has UMask=0077 and the
  hardening options, and its environment file sets only real `cfs serve` variables.
- deploy/kubernetes/: a StatefulSet of 3 behind a headless Service, readiness on /readyz, a
  PodDisruptionBudget, the Raft secret from a Secret, and every CFS_* variable and flag it
  uses is one `cfs serve --help` lists. Not yet run on a cluster (deploy/kubernetes/README.md).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to parse the manifests")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = DEPLOY / "systemd" / "cfs.service"
ENV_FILE = DEPLOY / "systemd" / "cfs.env"
KUBE = DEPLOY / "kubernetes"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
NO_SYSTEMD = "systemd-analyze not installed (apt-get install systemd; .ci/run installs it)"


def _serve_help() -> str:
    return subprocess.run(
        [sys.executable, "-m", "cfs_cluster", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout


def _help_variables() -> set[str]:
    return set(re.findall(r"\[(CFS_[A-Z_]+)\]", _serve_help()))


def _help_flags() -> set[str]:
    return set(re.findall(r"(--[a-z][a-z-]+)", _serve_help()))


# Variables `cfs serve` reads that are not a flag's default (cfs_cluster/cli.py).
EXTRA_VARIABLES = {"CFS_BOOTSTRAP_ADMIN"}


# --------------------------------------------------------------------------- systemd


def _unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith(("#", ";", "[")):
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def _verify(unit_text: str, tmp_path: Path) -> str:
    """`systemd-analyze verify` on the unit with ExecStart at this checkout's `cfs` (verify
    insists the program exists); returns what it said about the unit."""
    cfs = Path(sys.executable).with_name("cfs")
    assert cfs.exists(), f"{cfs}: the console script is not installed (make install)"
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={cfs}", unit_text, flags=re.M)
    unit = tmp_path / "cfs.service"
    unit.write_text(text)
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    about_unit = [
        line for line in (result.stdout + result.stderr).splitlines() if "cfs.service" in line
    ]
    return f"rc={result.returncode}\n" + "\n".join(about_unit)


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason=NO_SYSTEMD)
def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    assert _verify(UNIT.read_text(), tmp_path) == "rc=0\n"


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason=NO_SYSTEMD)
@pytest.mark.parametrize(
    ("old", "new"),
    [("UMask=0077", "UMaks=0077"), ("ProtectSystem=strict", "ProtectSystem=sometimes")],
)
def test_the_verify_check_catches_a_broken_unit(tmp_path: Path, old: str, new: str) -> None:
    text = UNIT.read_text()
    assert old in text
    assert _verify(text.replace(old, new), tmp_path) != "rc=0\n"


def test_systemd_unit_is_hardened_and_runs_cfs_serve() -> None:
    settings = _unit_settings(UNIT.read_text())
    assert settings["UMask"] == ["0077"]
    assert settings["User"] == ["cfs"] and settings["Group"] == ["cfs"]
    (exec_start,) = settings["ExecStart"]
    assert exec_start.split()[1:] == ["serve"], "settings belong in the environment file"
    assert Path(exec_start.split()[0]).name == "cfs"
    for option in (
        "NoNewPrivileges", "PrivateTmp", "PrivateDevices", "ProtectHome",
        "ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups",
        "RestrictNamespaces", "RestrictSUIDSGID", "LockPersonality",
    ):  # fmt: skip
        assert settings.get(option) == ["yes"], option
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["CapabilityBoundingSet"] == [""]
    assert settings["KillSignal"] == ["SIGTERM"]
    env = _env_file()
    (data_dir,) = settings["ReadWritePaths"]
    assert env["CFS_DATA_DIR"].startswith(data_dir + "/"), "the data dir must be writable"
    assert settings["StateDirectory"] == [Path(data_dir).name]


def _env_file() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_FILE.read_text().splitlines())
    return {k: v for k, *rest in pairs if k and not k.startswith("#") for v in rest}


def test_systemd_environment_file_sets_real_settings_and_placeholder_secrets() -> None:
    env = _env_file()
    unknown = set(env) - _help_variables() - EXTRA_VARIABLES
    assert not unknown, f"not `cfs serve` variables: {sorted(unknown)}"
    assert env["CFS_AUTH"] == "required"
    assert env["CFS_RAFT"] not in env["CFS_PEERS"].split(",")
    for secret in ("CFS_RAFT_PASSWORD", "CFS_BOOTSTRAP_ADMIN"):
        assert "change-me" in env[secret], f"{secret}: ship a placeholder, never a secret"


# --------------------------------------------------------------------------- Kubernetes


def _manifests() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBE.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and "kind" in document and document["kind"] != "Kustomization":
                found[f"{document['kind']}/{document['metadata']['name']}"] = document
    return found


def _statefulset() -> dict[str, Any]:
    statefulset: dict[str, Any] = _manifests()["StatefulSet/cfs"]
    return statefulset


def _container() -> dict[str, Any]:
    (container,) = _statefulset()["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def test_kubernetes_statefulset_of_three_behind_a_headless_service() -> None:
    manifests = _manifests()
    statefulset = _statefulset()
    spec = statefulset["spec"]
    assert spec["replicas"] == 3
    assert spec["podManagementPolicy"] == "Parallel"  # OrderedReady deadlocks on readiness
    headless = manifests[f"Service/{spec['serviceName']}"]["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["publishNotReadyAddresses"] is True  # peers must reach unready pods
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    for service in ("Service/cfs-raft", "Service/cfs"):
        assert manifests[service]["spec"]["selector"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in _container()["ports"]}
    assert ports == {"api": 5590, "raft": 5690}
    (claim,) = spec["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in _container()["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == _env()["CFS_DATA_DIR"]
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    assert {p.name for p in KUBE.glob("*.yaml")} - set(kustomization["resources"]) == {
        "kustomization.yaml",
        "secret.example.yaml",
    }


def test_kubernetes_probes_readiness_on_readyz_and_liveness_on_healthz() -> None:
    container = _container()
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "api"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "api"}
    detection = (
        container["readinessProbe"]["periodSeconds"]
        * container["readinessProbe"]["failureThreshold"]
    )
    assert float(_env()["CFS_DRAIN_SECONDS"]) > detection
    grace = _statefulset()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(_env()["CFS_DRAIN_SECONDS"])


def test_kubernetes_disruption_budget_keeps_the_quorum() -> None:
    budget = _manifests()["PodDisruptionBudget/cfs"]["spec"]
    assert budget["maxUnavailable"] == 1
    labels = _statefulset()["spec"]["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()


def _env() -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in _container()["env"]}


def test_kubernetes_secrets_come_from_the_secret() -> None:
    env = _env()
    secret = _manifests()["Secret/cfs-secrets"]
    for variable, key in (
        ("CFS_RAFT_PASSWORD", "raft-password"),
        ("CFS_BOOTSTRAP_ADMIN", "bootstrap-admin"),
    ):
        assert env[variable] == {"secretKeyRef": {"name": "cfs-secrets", "key": key}}
        assert "change-me" in secret["stringData"][key]


def test_kubernetes_settings_are_real_cfs_serve_settings() -> None:
    container = _container()
    env = _env()
    variables = {name for name in env if name.startswith("CFS_")} | {"CFS_PEERS"}
    unknown = variables - _help_variables() - EXTRA_VARIABLES
    assert not unknown, f"not `cfs serve` variables: {sorted(unknown)}"
    script = "\n".join(container["args"])
    assert container["command"] == ["/bin/sh", "-c"]
    assert re.search(r"^\s*exec cfs serve(\s|$)", script, re.M), script
    flags = set(re.findall(r"(--[a-z][a-z-]+)", script))
    assert flags <= _help_flags(), f"unknown flags: {sorted(flags - _help_flags())}"
    assert env["CFS_AUTH"] == "required"
    assert env["CFS_NODE_ID"] == "$(POD_NAME)"
    assert env["CFS_ADVERTISE_URL"] == "http://" + env["CFS_RAFT"].replace(":5690", ":5590")


def test_kubernetes_peers_script_lists_the_other_two_members(tmp_path: Path) -> None:
    """The shell that computes CFS_PEERS, run for each pod with `exec cfs serve` replaced."""
    shell = shutil.which("sh")
    assert shell is not None
    script = "\n".join(_container()["args"]).replace("exec cfs serve", 'echo "$CFS_PEERS"')
    rafts = [f"cfs-{i}.cfs-raft.plant.svc.cluster.local:5690" for i in range(3)]
    for raft in rafts:
        env = {"POD_NAMESPACE": "plant", "CFS_RAFT": raft, "PATH": "/usr/bin:/bin"}
        result = subprocess.run(
            [shell, "-c", script], env=env, capture_output=True, text=True, check=True, timeout=10
        )
        assert result.stdout.split()[0].split(",") == [r for r in rafts if r != raft]
    raft_env = _env()["CFS_RAFT"]
    assert raft_env == "$(POD_NAME).cfs-raft.$(POD_NAMESPACE).svc.cluster.local:5690"
