"""``plan``: which action a ClientFailover configuration change needs (the table in
``cfs_cluster.facet.runtime``) — a pure function of the old and new configuration."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from cfs_cluster.facet.model import ClientFailoverConfig

__all__ = ["Action", "plan"]


class Action(StrEnum):
    NOTHING = "nothing"
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    RELOAD = "reload"


def _active(config: ClientFailoverConfig | None) -> bool:
    return config is not None and config.enabled


def _identity(config: ClientFailoverConfig) -> tuple[Any, ...]:
    """Changing the group means another session: it must move."""
    return (config.failover_group_id,)


def _tuning(config: ClientFailoverConfig) -> tuple[Any, ...]:
    """Changing any of these keeps the session; the agent adopts them in place."""
    return (
        config.endpoint,
        config.validate_endpoint_certificate,
        config.username,
        config.password,
        config.client_id,
        config.client_secret,
        config.token_endpoint,
        config.failover_timeout,
        config.behaviour,
    )


def plan(old: ClientFailoverConfig | None, new: ClientFailoverConfig | None) -> Action:
    """What the running agent must do to go from ``old`` to ``new`` (see the module table)."""
    if not _active(old):
        return Action.START if _active(new) else Action.NOTHING
    if not _active(new):
        return Action.STOP
    assert old is not None and new is not None  # both active
    if _identity(old) != _identity(new):
        return Action.RESTART
    if _tuning(old) != _tuning(new):
        return Action.RELOAD
    return Action.NOTHING
