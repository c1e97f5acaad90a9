"""An adapter's failover health and diagnostics as OMF (spec §5.9).

What the adapter framework sends (AF ``FailoverHealthOmfMessageCreator``,
``HealthOmfMessageCreatorBase``, ``FailoverDiagnosticsOmfMessageCreator``), with its type ids
and property names, so that PI or CONNECT data services show our adapters as they show AVEVA's:

- a static asset of type ``FailoverHealth`` (index and name ``Name``): ``Description``
  ("Failover Health"), ``Host``, ``Version``, ``Failover Group ID``, ``Failover Mode``,
  ``Failover Endpoint`` — sent again whenever the configuration changes;
- ``{base}.DeviceStatus`` (type ``DeviceStatus``: ``Time``, ``DeviceStatus`` as text), sent when
  the status changes: ``Starting``, ``Good``, ``DeviceInError``, ``NotConfigured``, ``Shutdown``;
- ``{base}.NextHealthMessageExpected`` (``Time``, ``NextHealthMessageExpected``) every minute;
- ``{base}.FailoverStatus`` (type ``FailoverStatus``: ``Timestamp``, ``FailoverScore`` float64,
  ``FailoverRole`` text), sent on every score or role change;
- ``__Link`` data: ``_ROOT`` → the asset → the three streams.

``base`` is ``{session id}.Failover`` (the framework's ``{Machine}.{Service}.Failover``). Posting
goes through the service's own OMF sender (cfs_cluster/ops/omf/sender.py): buffering, back-off,
Retry-After, Basic or client-credentials authentication, one implementation for both sides. The
sender is imported when the first endpoint is configured, not when this module is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from cfs_cluster.protocol.validators import HealthEndpointSettings
from cfs_cluster.protocol.wire import ClientRole, format_datetime, ticks_from_unix

if TYPE_CHECKING:
    from cfs_cluster.ops.omf.messages import Message
    from cfs_cluster.ops.omf.sender import EndpointSender

__all__ = [
    "HEALTH_INTERVAL",
    "DeviceStatus",
    "FailoverAsset",
    "FailoverHealth",
    "HealthEndpointSettings",
]

log = logging.getLogger("cfs.agent")

HEALTH_INTERVAL = 60.0  # seconds between NextHealthMessageExpected values (AF _heartBeatSpan)
SHUTDOWN_FLUSH = 2.0  # seconds a graceful stop may spend telling the endpoints
T_ASSET = "FailoverHealth"
T_STATUS = "DeviceStatus"
T_NEXT = "NextHealthMessageExpected"
T_FAILOVER = "FailoverStatus"
TYPE_VERSION = "1.0.0.0"

_STRING = {"type": "string"}
_TIME = {"type": "string", "format": "date-time"}
_ASSET_PROPERTIES = (
    "Description",
    "Host",
    "Version",
    "Failover Group ID",
    "Failover Mode",
    "Failover Endpoint",
)


class DeviceStatus(StrEnum):
    """The failover component's DeviceStatus, as text (AF DeviceStatusMapper)."""

    Starting = "Starting"
    Good = "Good"
    DeviceInError = "DeviceInError"
    NotConfigured = "NotConfigured"
    Shutdown = "Shutdown"


@dataclass(frozen=True)
class FailoverAsset:
    """What the static asset says about the failover configuration ("" when there is none)."""

    group_id: str = ""
    mode: str = ""
    endpoint: str = ""


def _time(unix: float) -> str:
    return format_datetime(ticks_from_unix(unix))


def _dynamic(type_id: str, index: str, values: dict[str, dict[str, str]]) -> dict[str, Any]:
    return {
        "id": type_id,
        "version": TYPE_VERSION,
        "type": "object",
        "classification": "dynamic",
        "properties": {index: {**_TIME, "isindex": True}, **values},
    }


TYPES: tuple[dict[str, Any], ...] = (
    {
        "id": T_ASSET,
        "version": TYPE_VERSION,
        "type": "object",
        "classification": "static",
        "properties": {
            "Name": {**_STRING, "isindex": True, "isname": True},
            **{name: dict(_STRING) for name in _ASSET_PROPERTIES},
        },
    },
    _dynamic(T_STATUS, "Time", {"DeviceStatus": dict(_STRING)}),
    _dynamic(T_NEXT, "Time", {"NextHealthMessageExpected": dict(_TIME)}),
    _dynamic(
        T_FAILOVER,
        "Timestamp",
        {"FailoverScore": {"type": "number", "format": "float64"}, "FailoverRole": dict(_STRING)},
    ),
)


@dataclass(frozen=True)
class _Names:
    base: str

    @property
    def device_status(self) -> str:
        return f"{self.base}.DeviceStatus"

    @property
    def next_expected(self) -> str:
        return f"{self.base}.NextHealthMessageExpected"

    @property
    def failover_status(self) -> str:
        return f"{self.base}.FailoverStatus"


class FailoverHealth:
    """Sends one adapter's failover health to every configured OMF endpoint.

    Args:
        base_id: the stream prefix, ``{session id}.Failover``.
        host, version: the asset's ``Host`` and ``Version``.
        interval: seconds between NextHealthMessageExpected values (one minute).

    Feed it with ``set_endpoints``, ``set_asset`` and ``report``; ``start`` runs the loop.
    """

    def __init__(
        self,
        base_id: str,
        *,
        host: str,
        version: str,
        interval: float = HEALTH_INTERVAL,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.names = _Names(base_id)
        self._host = host
        self._version = version
        self.interval = interval
        self._wall = wall
        self._asset = FailoverAsset()
        self._status: DeviceStatus | None = None
        self._failover: tuple[float, ClientRole] | None = None
        self.senders: dict[str, EndpointSender] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    # ----------------------------------------------------------------- inputs

    def set_endpoints(self, endpoints: tuple[HealthEndpointSettings, ...]) -> None:
        """Follow the configured endpoints: a new or changed one starts with the setup."""
        wanted = {e.id: e for e in endpoints}
        for endpoint_id in list(self.senders):
            if wanted.get(endpoint_id) != self.senders[endpoint_id].endpoint:
                self._close_later(self.senders.pop(endpoint_id))
        for endpoint_id, endpoint in wanted.items():
            if endpoint_id not in self.senders:
                self.senders[endpoint_id] = self._new_sender(endpoint)
        self._wake.set()

    def set_asset(self, asset: FailoverAsset) -> None:
        """The failover configuration changed: send the static asset again."""
        if asset == self._asset:
            return
        self._asset = asset
        for sender in self.senders.values():
            sender.resend([self._asset_message()])
        self._wake.set()

    def report(self, status: DeviceStatus, score: float, role: ClientRole | None) -> None:
        """The agent's state: DeviceStatus when it changed, FailoverStatus when the score or
        the role changed (``role`` None: no failover, nothing to say)."""
        now = self._wall()
        if status != self._status:
            self._status = status
            self._enqueue(self._status_message(now))
        if role is not None and (score, role) != self._failover:
            self._failover = (score, role)
            self._enqueue(self._failover_message(now))

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="cfs-failover-health")

    async def stop(self) -> None:
        """Say Shutdown (briefly, best effort) and close every endpoint."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.senders:
            self._status = DeviceStatus.Shutdown
            self._enqueue(self._status_message(self._wall()))
            with contextlib.suppress(Exception):
                async with asyncio.timeout(SHUTDOWN_FLUSH):
                    await self._flush()
        for sender in self.senders.values():
            await sender.close()
        self.senders.clear()

    async def _run(self) -> None:
        next_beat = 0.0
        while True:
            now = self._wall()
            if now >= next_beat:
                self._enqueue(self._heartbeat_message(now))
                next_beat = now + self.interval
            try:
                await self._flush()
            except Exception:  # health must never take the adapter down
                log.exception("Failover health egress failed")
            self._wake.clear()
            # Wake for news at once; otherwise often enough for the sender's back-off.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(1.0, max(0.05, next_beat - self._wall()))):
                    await self._wake.wait()

    async def _flush(self) -> None:
        await asyncio.gather(*(s.flush() for s in self.senders.values()))

    # ----------------------------------------------------------------- messages

    def _new_sender(self, endpoint: HealthEndpointSettings) -> EndpointSender:
        from cfs_cluster.ops.omf.sender import EndpointSender

        log.info(
            "Failover health endpoint '%s': sending OMF to %s.", endpoint.id, endpoint.endpoint
        )
        sender = EndpointSender(endpoint, self._setup(), None)
        # A new endpoint learns the current state, not only what changes from now on.
        now = self._wall()
        if self._status is not None:
            sender.enqueue(self._status_message(now))
        if self._failover is not None:
            sender.enqueue(self._failover_message(now))
        return sender

    def _close_later(self, sender: EndpointSender) -> None:
        task = asyncio.get_running_loop().create_task(sender.close())
        self._closing.add(task)  # keep a reference until it ran
        task.add_done_callback(self._closing.discard)

    def _enqueue(self, message: Message) -> None:
        for sender in self.senders.values():
            sender.enqueue(message)
        self._wake.set()

    def _setup(self) -> list[Message]:
        """Types, containers, the asset, then the links: the order OMF requires."""
        from cfs_cluster.ops.omf.messages import Message

        n = self.names
        containers = (
            (n.device_status, T_STATUS),
            (n.next_expected, T_NEXT),
            (n.failover_status, T_FAILOVER),
        )
        asset = {"typeid": T_ASSET, "index": n.base}
        links = [{"source": {"typeid": T_ASSET, "index": "_ROOT"}, "target": asset}]
        links += [{"source": asset, "target": {"containerid": cid}} for cid, _ in containers]
        return [
            Message("type", "create", TYPES),
            Message(
                "container",
                "update",
                tuple({"id": cid, "typeid": tid, "name": tid} for cid, tid in containers),
            ),
            self._asset_message(),
            Message("data", "update", ({"typeid": "__Link", "values": links},)),
        ]

    def _asset_message(self) -> Message:
        from cfs_cluster.ops.omf.messages import Message

        a = self._asset
        value = {
            "Name": self.names.base,
            "Description": "Failover Health",
            "Host": self._host,
            "Version": self._version,
            "Failover Group ID": a.group_id,
            "Failover Mode": a.mode,
            "Failover Endpoint": a.endpoint,
        }
        return Message("data", "update", ({"typeid": T_ASSET, "values": [value]},))

    def _status_message(self, now: float) -> Message:
        value = {"Time": _time(now), "DeviceStatus": str(self._status)}
        return self._data(self.names.device_status, value)

    def _heartbeat_message(self, now: float) -> Message:
        value = {"Time": _time(now), "NextHealthMessageExpected": _time(now + self.interval)}
        return self._data(self.names.next_expected, value)

    def _failover_message(self, now: float) -> Message:
        assert self._failover is not None
        score, role = self._failover
        value = {"Timestamp": _time(now), "FailoverScore": score, "FailoverRole": role.name}
        return self._data(self.names.failover_status, value)

    def _data(self, container: str, value: dict[str, Any]) -> Message:
        from cfs_cluster.ops.omf.messages import Message

        return Message("data", "create", ({"containerid": container, "values": [value]},))
