"""Fixtures every test folder shares; the harnesses behind them live in tests/support/.

A module that wants one cluster for all its tests defines its own module-scoped ``cluster``,
which takes precedence over the fresh one per test below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.clusterkit import Cluster
from support.nodes import ADAPTER, ADMIN, settings_for

from cfs_cluster.settings import Settings


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Three real `cfs serve` processes on loopback ports, stopped after the test."""
    with Cluster(tmp_path) as running:
        yield running


@pytest.fixture
def credentials() -> dict[str, tuple[str, str]]:
    """The administrator and adapter accounts the security tests create."""
    return {"admin": ADMIN, "adapter": ADAPTER}


@pytest.fixture
def node_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Build a single node's Settings on free ports; keyword arguments set SecuritySettings."""

    def build(**security: Any) -> Settings:
        return settings_for(tmp_path, **security)

    return build
