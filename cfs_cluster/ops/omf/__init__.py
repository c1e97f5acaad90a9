"""Health and diagnostics egress as OMF 1.2 (spec §6) to PI Web API or CONNECT data services.

``messages`` is the pure message model, ``diagnostics`` reads this process, ``sender`` posts to
one endpoint, ``egress`` is the task that drives them.

What each node sends to every configured health endpoint, once per interval:

- Setup, once per endpoint (and again after the endpoint's configuration changes): the types,
  the containers, the static elements of the asset hierarchy and the ``__Link`` data that hangs
  them together::

      Client Failover Services                                   (root, linked to _ROOT)
      └── <cluster>.ClientFailoverService                        (the cluster as one service)
          ├── <cluster>.ClientFailoverService.ClientFailover     FailoverObjectCount
          └── <node>.ClientFailoverService                       System.Diagnostics
              └── <node>.ClientFailoverService.ClientFailover    DeviceStatus, NextHealthMessageExpected

- Data: this node's DeviceStatus, NextHealthMessageExpected and process diagnostics. The
  cluster-wide FailoverObjectCount is sent by the Raft leader only, stamped with the start of
  the interval (a wall-clock slot) and sent with ``action: update``: every node agrees on the
  slot, so a new leader that sends the current slot again overwrites the same value instead of
  adding a duplicate, and sending it at once on election leaves no gap.

Type ids and definitions are constants (``TYPE_VERSION``): OMF types are immutable and PI Web
API answers 409 to a changed definition (spec §6.4), so they must never change between releases.

Failures (no connection, 5xx, 429, 401/403) keep the messages in a bounded per-endpoint buffer
and retry with exponential back-off, or exactly after ``Retry-After`` when the endpoint gives one.
All of it runs in its own task with its own HTTP client: it never touches the heartbeat path.

The adapter side's failover health (cfs_cluster/agent/health.py) posts through the same
``sender``; the exports below are loaded lazily so that importing ``sender`` alone loads neither
the engine nor the metrics (an adapter embeds the agent without them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cfs_cluster.ops.omf.egress import HealthEgress, HealthSource
    from cfs_cluster.ops.omf.messages import (
        DeviceStatus,
        Message,
        Names,
        build_setup,
        split_message,
    )

_EXPORTS = {
    "HealthEgress": "egress",
    "HealthSource": "egress",
    "DeviceStatus": "messages",
    "Message": "messages",
    "Names": "messages",
    "build_setup": "messages",
    "split_message": "messages",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "DeviceStatus",
    "HealthEgress",
    "HealthSource",
    "Message",
    "Names",
    "build_setup",
    "split_message",
]
