"""The names under which the replicated state is pickled, kept across module moves.

Journal entries, snapshots and backups name every pickled class by module and qualified name,
and nodes of adjacent releases read each other's entries during a rolling upgrade
(docs/operations.md). So a class keeps the module name it was first pickled under — the engine's
records and commands ``cfs_cluster.engine``, the configuration values ``cfs_cluster.config``,
the wire enums ``cfs_cluster.wire`` — and those names resolve to today's modules.
"""

from __future__ import annotations

import sys
from enum import Enum
from types import ModuleType

from cfs_cluster.engine import accounts, commands, configuration, failover, members, state
from cfs_cluster.engine.upgradable import Upgradable
from cfs_cluster.protocol import wire

__all__ = ["PICKLED_AS", "keep_pickled_names"]

ENGINE = "cfs_cluster.engine"
# Module name in the pickle stream -> the modules whose pickled classes it names.
PICKLED_AS: dict[str, tuple[ModuleType, ...]] = {
    ENGINE: (accounts, commands, failover, members, state),
    "cfs_cluster.config": (configuration,),
    "cfs_cluster.wire": (wire,),
}


def keep_pickled_names() -> None:
    """Give every pickled class its historical module name and make that name importable."""
    for name, modules in PICKLED_AS.items():
        for module in modules:
            for value in vars(module).values():
                if _pickled(value, module):
                    value.__module__ = name
        if name != ENGINE:
            sys.modules.setdefault(name, modules[0])


def _pickled(value: object, module: ModuleType) -> bool:
    if not isinstance(value, type) or value.__module__ != module.__name__:
        return False
    return issubclass(value, Upgradable | Enum) or value is commands.Result
