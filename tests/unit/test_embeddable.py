"""An adapter embeds the agent or the facet without the node: importing them loads no server part.

Each import runs in a fresh interpreter, so what other tests imported cannot hide a dependency.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# What only a node needs: Raft, the HTTP server, metrics, the failover rules and the node itself.
SERVER_ONLY = (
    "pysyncobj",
    "uvicorn.server",
    "prometheus_client",
    "cryptography",
    "cfs_cluster.engine",
    "cfs_cluster.cluster",
    "cfs_cluster.security",
    "cfs_cluster.ops",
    "cfs_cluster.api.app",
)


def loaded_after(statement: str) -> list[str]:
    code = f"{statement}; import sys, json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules: list[str] = json.loads(out.stdout)
    return modules


def server_parts(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == s or m.startswith(s + ".") for s in SERVER_ONLY)]


@pytest.mark.parametrize("package", ["cfs_cluster.agent", "cfs_cluster.facet"])
def test_importing_an_embeddable_package_loads_no_server_part(package: str) -> None:
    modules = loaded_after(f"import {package}")
    assert package in modules
    assert server_parts(modules) == []


def test_the_agent_does_not_load_the_web_framework() -> None:
    modules = loaded_after("import cfs_cluster.agent")
    assert [m for m in modules if m.split(".")[0] in ("fastapi", "starlette", "uvicorn")] == []


def test_the_check_sees_the_server_when_it_is_loaded() -> None:
    """The probe itself works: importing the node's application loads the server parts."""
    modules = loaded_after("import cfs_cluster.api.app")
    assert "pysyncobj" in server_parts(modules)
