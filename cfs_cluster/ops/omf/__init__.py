"""Health and diagnostics egress as OMF 1.2 (spec §6) to PI Web API or CONNECT data services.

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
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import json
import logging
import math
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from cfs_cluster.engine.configuration import HealthEndpoint
from cfs_cluster.ops.metrics import Metrics
from cfs_cluster.protocol.wire import format_datetime, ticks_from_unix

__all__ = [
    "DeviceStatus",
    "HealthEgress",
    "HealthSource",
    "Message",
    "Names",
    "build_setup",
    "split_message",
]

log = logging.getLogger("cfs.omf")

TYPE_VERSION = "1.0.0.0"
TYPE_PREFIX = "CfsCluster."
OMF_VERSION = "1.2"
MAX_BODY_BYTES = 192 * 1024  # PI Web API refuses larger OMF bodies with 413
MAX_BUFFERED = 1000  # data messages kept per endpoint while it is unreachable
MAX_BACKOFF = 60.0
MAX_RETRY_AFTER = 600.0
POST_TIMEOUT = 10.0
REMEDY_409 = (
    "An OMF type already exists with another definition (e.g. after a version change). "
    "Stop the service and PI Web API, delete the 'Client Failover Services' AF elements, "
    "their templates and the health PI points, start PI Web API, then the service "
    "(spec §6.4; PI Web API 'Clean up the development environment')."
)


class DeviceStatus(IntEnum):
    """Spec §6.1 DeviceStatus, sent as an integer."""

    Good = 0
    DeviceInError = 1
    Shutdown = 2


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class Message:
    """One OMF request: a message type, an action and a JSON array body."""

    message_type: str  # "type" | "container" | "data"
    action: str  # "create" | "update"
    body: tuple[dict[str, Any], ...]

    def encode(self) -> bytes:
        return json.dumps(list(self.body), separators=(",", ":")).encode()


@dataclass(frozen=True)
class Names:
    """Element indexes and container ids of one node in one cluster."""

    node: str
    cluster: str

    root = "ClientFailoverServices"

    @property
    def cluster_service(self) -> str:
        return f"{self.cluster}.ClientFailoverService"

    @property
    def cluster_component(self) -> str:
        return f"{self.cluster_service}.ClientFailover"

    @property
    def node_service(self) -> str:
        return f"{self.node}.ClientFailoverService"

    @property
    def node_component(self) -> str:
        return f"{self.node_service}.ClientFailover"

    @property
    def diagnostics(self) -> str:
        return f"{self.node_service}.System.Diagnostics"

    @property
    def device_status(self) -> str:
        return f"{self.node_component}.DeviceStatus"

    @property
    def next_expected(self) -> str:
        return f"{self.node_component}.NextHealthMessageExpected"

    @property
    def object_count(self) -> str:
        return f"{self.cluster_component}.FailoverObjectCount"


T_ROOT = TYPE_PREFIX + "ClientFailoverServices"
T_SERVICE = TYPE_PREFIX + "ClientFailoverService"
T_COMPONENT = TYPE_PREFIX + "ClientFailover"
T_STATUS = TYPE_PREFIX + "DeviceStatus"
T_NEXT = TYPE_PREFIX + "NextHealthMessageExpected"
T_COUNT = TYPE_PREFIX + "FailoverObjectCount"
T_DIAGNOSTICS = TYPE_PREFIX + "Diagnostics.System"

_STRING = {"type": "string"}
_INT = {"type": "integer", "format": "int32"}
_NUMBER = {"type": "number", "format": "float64"}
_TIME = {"type": "string", "format": "date-time"}
_DIAGNOSTIC_FIELDS: tuple[tuple[str, dict[str, str]], ...] = (
    ("ProcessIdentifier", _INT),
    ("StartTime", _TIME),
    ("WorkingSet", _NUMBER),
    ("TotalProcessorTime", _NUMBER),
    ("TotalUserProcessorTime", _NUMBER),
    ("TotalPrivilegedProcessorTime", _NUMBER),
    ("ThreadCount", _INT),
    ("HandleCount", _INT),
    ("ManagedMemorySize", _NUMBER),
    ("PrivateMemorySize", _NUMBER),
    ("PeakPagedMemorySize", _NUMBER),
    ("StorageTotalSize", _NUMBER),
    ("StorageFreeSpace", _NUMBER),
)


def _static_type(type_id: str, name: str, description: str) -> dict[str, Any]:
    return {
        "id": type_id,
        "version": TYPE_VERSION,
        "name": name,
        "description": description,
        "classification": "static",
        "type": "object",
        "properties": {
            "Id": {**_STRING, "isindex": True},
            "Name": {**_STRING, "isname": True},
            "Description": _STRING,
        },
    }


def _dynamic_type(
    type_id: str, name: str, fields: Iterable[tuple[str, dict[str, str]]]
) -> dict[str, Any]:
    properties: dict[str, Any] = {"Timestamp": {**_TIME, "isindex": True}}
    properties.update({key: dict(spec) for key, spec in fields})
    return {
        "id": type_id,
        "version": TYPE_VERSION,
        "name": name,
        "classification": "dynamic",
        "type": "object",
        "properties": properties,
    }


TYPES: tuple[dict[str, Any], ...] = (
    _static_type(T_ROOT, "Client Failover Services", "Root of every Client Failover Service"),
    _static_type(T_SERVICE, "Client Failover Service", "A Client Failover Service instance"),
    _static_type(T_COMPONENT, "Client Failover", "Failover health of a service"),
    _dynamic_type(T_STATUS, "DeviceStatus", [("DeviceStatus", _INT)]),
    _dynamic_type(T_NEXT, "NextHealthMessageExpected", [("NextHealthMessageExpected", _TIME)]),
    _dynamic_type(T_COUNT, "FailoverObjectCount", [("Groups", _INT), ("Sessions", _INT)]),
    _dynamic_type(T_DIAGNOSTICS, "Diagnostics.System", _DIAGNOSTIC_FIELDS),
)


def build_setup(names: Names) -> list[Message]:
    """Types, then containers, then static elements, then links: the order OMF requires."""
    containers = (
        (names.diagnostics, T_DIAGNOSTICS, "System.Diagnostics"),
        (names.device_status, T_STATUS, "DeviceStatus"),
        (names.next_expected, T_NEXT, "NextHealthMessageExpected"),
        (names.object_count, T_COUNT, "FailoverObjectCount"),
    )
    elements = [
        (T_ROOT, names.root, "Client Failover Services"),
        (T_SERVICE, names.cluster_service, names.cluster_service),
        (T_COMPONENT, names.cluster_component, names.cluster_component),
        (T_SERVICE, names.node_service, names.node_service),
        (T_COMPONENT, names.node_component, names.node_component),
    ]
    static = [
        {"typeid": type_id, "values": [{"Id": index, "Name": name, "Description": ""}]}
        for type_id, index, name in elements
    ]
    links = [
        _link((T_ROOT, "_ROOT"), (T_ROOT, names.root)),
        _link((T_ROOT, names.root), (T_SERVICE, names.cluster_service)),
        _link((T_SERVICE, names.cluster_service), (T_COMPONENT, names.cluster_component)),
        _link((T_SERVICE, names.cluster_service), (T_SERVICE, names.node_service)),
        _link((T_SERVICE, names.node_service), (T_COMPONENT, names.node_component)),
        _link((T_SERVICE, names.node_service), names.diagnostics),
        _link((T_COMPONENT, names.node_component), names.device_status),
        _link((T_COMPONENT, names.node_component), names.next_expected),
        _link((T_COMPONENT, names.cluster_component), names.object_count),
    ]
    return [
        Message("type", "create", TYPES),
        Message(
            "container",
            "update",
            tuple({"id": cid, "typeid": tid, "name": name} for cid, tid, name in containers),
        ),
        Message("data", "update", tuple(static)),
        Message("data", "update", ({"typeid": "__Link", "values": links},)),
    ]


def _link(source: tuple[str, str], target: tuple[str, str] | str) -> dict[str, Any]:
    if isinstance(target, str):
        target_ref: dict[str, str] = {"containerid": target}
    else:
        target_ref = {"typeid": target[0], "index": target[1]}
    return {"source": {"typeid": source[0], "index": source[1]}, "target": target_ref}


def _stamp(unix: float) -> str:
    return format_datetime(ticks_from_unix(unix))


def node_data(
    names: Names, now: float, interval: float, status: DeviceStatus, diagnostics: dict[str, Any]
) -> Message:
    stamp = _stamp(now)
    return Message(
        "data",
        "create",
        (
            {"containerid": names.diagnostics, "values": [{"Timestamp": stamp, **diagnostics}]},
            {
                "containerid": names.device_status,
                "values": [{"Timestamp": stamp, "DeviceStatus": int(status)}],
            },
            {
                "containerid": names.next_expected,
                "values": [
                    {"Timestamp": stamp, "NextHealthMessageExpected": _stamp(now + interval)}
                ],
            },
        ),
    )


def count_data(names: Names, slot_start: float, groups: int, sessions: int) -> Message:
    """Cluster-wide counts at the slot's start; ``update`` makes a resend by another leader idempotent."""
    value = {"Timestamp": _stamp(slot_start), "Groups": groups, "Sessions": sessions}
    return Message("data", "update", ({"containerid": names.object_count, "values": [value]},))


def split_message(message: Message, limit: int = MAX_BODY_BYTES) -> list[Message]:
    """Split a body into requests of at most ``limit`` bytes (an oversized item goes alone)."""
    parts: list[Message] = []
    current: list[dict[str, Any]] = []
    size = 2
    for item in message.body:
        item_size = len(json.dumps(item, separators=(",", ":"))) + 1
        if current and size + item_size > limit:
            parts.append(Message(message.message_type, message.action, tuple(current)))
            current, size = [], 2
        current.append(item)
        size += item_size
    if current:
        parts.append(Message(message.message_type, message.action, tuple(current)))
    return parts


# --------------------------------------------------------------------------- diagnostics


def collect_diagnostics(started_at: float, data_dir: Path) -> dict[str, Any]:
    """Process metrics in the units of the commercial sample (sizes in MB, times in seconds)."""
    status = _proc_status()
    times = os.times()
    try:
        disk = shutil.disk_usage(data_dir)
        total, free = disk.total / 1e6, disk.free / 1e6
    except OSError:
        total = free = 0.0
    try:
        handles = len(os.listdir("/proc/self/fd"))
    except OSError:
        handles = 0
    return {
        "ProcessIdentifier": os.getpid(),
        "StartTime": _stamp(started_at),
        "WorkingSet": status.get("VmRSS", 0) / 1e3,
        "TotalProcessorTime": times.user + times.system,
        "TotalUserProcessorTime": times.user,
        "TotalPrivilegedProcessorTime": times.system,
        "ThreadCount": int(status.get("Threads", 0)),
        "HandleCount": handles,
        "ManagedMemorySize": status.get("RssAnon", 0) / 1e3,
        "PrivateMemorySize": status.get("VmData", 0) / 1e3,
        "PeakPagedMemorySize": status.get("VmHWM", 0) / 1e3,
        "StorageTotalSize": total,
        "StorageFreeSpace": free,
    }


def _proc_status() -> dict[str, float]:
    """Numbers of /proc/self/status (kB for sizes); empty where /proc does not exist."""
    values: dict[str, float] = {}
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                first = rest.split()[:1]
                if first and first[0].isdigit():
                    values[key] = float(first[0])
    except OSError:
        pass
    return values


# --------------------------------------------------------------------------- sending


class _Outcome(IntEnum):
    DONE = 0  # accepted, or refused for good (logged): move on
    RETRY = 1  # keep it and wait


class EndpointSender:
    """One endpoint: setup first, then buffered data in order, with back-off."""

    def __init__(
        self,
        endpoint: HealthEndpoint,
        names: Names,
        metrics: Metrics | None,
        clock: Callable[[], float] = time.monotonic,
        max_buffered: int = MAX_BUFFERED,
    ) -> None:
        self.endpoint = endpoint
        self._metrics = metrics
        self._clock = clock
        self._setup: deque[Message] = deque(m for s in build_setup(names) for m in split_message(s))
        self._data: deque[Message] = deque()
        self._max_buffered = max_buffered
        self._not_before = 0.0
        self._failures = 0
        self._token: tuple[str, float] | None = None
        self._client = httpx.AsyncClient(verify=endpoint.validate_certificate, timeout=POST_TIMEOUT)

    @property
    def buffered(self) -> int:
        return len(self._setup) + len(self._data)

    def enqueue(self, message: Message) -> None:
        for part in split_message(message):
            if len(self._data) >= self._max_buffered:
                self._data.popleft()  # the oldest data is the least useful
                if self._metrics is not None:
                    self._metrics.omf_buffered.labels(self.endpoint.id).inc()
            self._data.append(part)

    async def flush(self) -> None:
        """Send what is buffered, in order, until done or the endpoint asks us to wait."""
        if self._clock() < self._not_before:
            return
        while self._setup or self._data:
            queue = self._setup if self._setup else self._data
            if await self._post(queue[0]) == _Outcome.RETRY:
                return
            queue.popleft()

    async def close(self) -> None:
        await self._client.aclose()

    async def _post(self, message: Message) -> _Outcome:
        body = message.encode()
        url = self.endpoint.endpoint
        try:
            headers = await self._headers(message)
            response = await self._client.post(url, content=body, headers=headers)
        except (httpx.HTTPError, KeyError, ValueError) as exc:  # ValueError: a bad token answer
            return self._retry(f"{type(exc).__name__}: {exc}", None)
        status = response.status_code
        if 200 <= status < 300:
            self._succeeded(message, body, status)
            return _Outcome.DONE
        if status == 401:
            self._token = None  # an expired bearer token: fetch a new one next time
        if status in (401, 403, 408, 429) or status >= 500:
            return self._retry(f"HTTP {status} {response.reason_phrase}", _retry_after(response))
        return self._refused(message, status, response.text[:500])

    def _succeeded(self, message: Message, body: bytes, status: int) -> None:
        if self._failures:
            log.info("Health endpoint '%s' is reachable again.", self.endpoint.id)
        self._failures = 0
        self._count("success")
        if log.isEnabledFor(
            5
        ):  # Verbose: trace the request content, as the commercial service does
            log.log(
                5,
                "Post to %s successful: %s Request Content: %s",
                self.endpoint.endpoint,
                status,
                body.decode(),
            )
        else:
            log.debug(
                "Post of %s to %s successful: %s",
                message.message_type,
                self.endpoint.endpoint,
                status,
            )

    def _retry(self, why: str, retry_after: float | None) -> _Outcome:
        self._failures += 1
        self._count("failure")
        backoff = min(MAX_BACKOFF, 2.0 ** (self._failures - 1))
        delay = retry_after if retry_after is not None else backoff
        self._not_before = self._clock() + delay
        level = logging.WARNING if self._failures == 1 else logging.DEBUG
        log.log(
            level,
            "Post to %s unsuccessful: %s; %d message(s) buffered, retrying in %.1f s.",
            self.endpoint.endpoint, why, self.buffered, delay,
        )  # fmt: skip
        return _Outcome.RETRY

    def _refused(self, message: Message, status: int, text: str) -> _Outcome:
        if status == 409 and message.message_type == "type":
            self._count("conflict")
            log.error(
                "Post of OMF types to %s answered 409 Conflict. %s",
                self.endpoint.endpoint,
                REMEDY_409,
            )
            return _Outcome.DONE  # data still flows while the containers exist (seed 000)
        self._count("rejected")
        log.error(
            "Post of OMF %s to %s refused with HTTP %d; message dropped: %s",
            message.message_type, self.endpoint.endpoint, status, text,
        )  # fmt: skip
        return _Outcome.DONE

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.omf_posts.labels(self.endpoint.id, outcome).inc()

    async def _headers(self, message: Message) -> dict[str, str]:
        headers = {
            "messagetype": message.message_type,
            "messageformat": "json",
            "omfversion": OMF_VERSION,
            "action": message.action,
            "content-type": "application/json",
        }
        e = self.endpoint
        if e.client_id is not None:
            headers["authorization"] = f"Bearer {await self._bearer()}"
        else:
            headers["x-requested-with"] = "XMLHttpRequest"  # PI Web API's CSRF defence
        if e.username is not None:
            raw = f"{e.username}:{e.password or ''}".encode()
            headers["authorization"] = "Basic " + base64.b64encode(raw).decode()
            headers["accept-verbosity"] = "verbose"
        return headers

    async def _bearer(self) -> str:
        """Client-credentials token for CONNECT data services, cached until shortly before expiry."""
        if self._token is not None and self._clock() < self._token[1]:
            return self._token[0]
        e = self.endpoint
        response = await self._client.post(
            e.token_endpoint or _default_token_endpoint(e.endpoint),
            data={
                "grant_type": "client_credentials",
                "client_id": e.client_id or "",
                "client_secret": e.client_secret or "",
            },
        )
        if response.status_code != 200:
            raise httpx.HTTPError(f"token endpoint answered HTTP {response.status_code}")
        payload = response.json()
        token = str(payload["access_token"])
        lifetime = float(payload.get("expires_in", 3600))
        self._token = (token, self._clock() + max(0.0, lifetime - 60))
        return token


def _default_token_endpoint(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}/identity/connect/token"


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After as seconds or an HTTP date; None when absent or unreadable."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if math.isnan(seconds):
        return None
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


# --------------------------------------------------------------------------- the egress task


@dataclass(frozen=True)
class HealthSource:
    """What the egress reads from its node (callables: no import of node.py here)."""

    node_id: str
    cluster_name: str
    endpoints: Callable[[], tuple[HealthEndpoint, ...]]
    counts: Callable[[], tuple[int, int]]  # (groups, sessions)
    is_leader: Callable[[], bool]
    is_ready: Callable[[], bool]


class HealthEgress:
    """Every ``interval`` seconds (wall-clock slots), enqueue this node's data and flush."""

    def __init__(
        self,
        source: HealthSource,
        interval: float,
        metrics: Metrics | None,
        started_at: float,
        data_dir: Path,
        wall: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self._clock = clock
        self.interval = interval
        self.names = Names(source.node_id, source.cluster_name)
        self._metrics = metrics
        self._started_at = started_at
        self._data_dir = data_dir
        self._wall = wall
        self.senders: dict[str, EndpointSender] = {}
        self._slot: int | None = None
        self._count_slot: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cfs-omf-egress")

    async def stop(self) -> None:
        """Cancel the loop, then tell each endpoint (briefly) that this node is shutting down."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):  # best effort, bounded: the node is stopping
            await asyncio.wait_for(self._send_shutdown(), 2.0)
        for sender in self.senders.values():
            await sender.close()
        self.senders.clear()

    async def _run(self) -> None:
        tick = max(0.05, min(1.0, self.interval / 4))
        while True:
            try:
                await self.cycle()
            except Exception:  # egress must never take the node down
                log.exception("Health egress cycle failed")
            await asyncio.sleep(tick)

    async def cycle(self) -> None:
        """One pass: follow the endpoint configuration, enqueue new data, flush every endpoint."""
        self._reconcile(self.source.endpoints())
        if not self.senders:
            return
        now = self._wall()
        slot = math.floor(now / self.interval)
        if slot != self._slot:
            self._slot = slot
            status = DeviceStatus.Good if self.source.is_ready() else DeviceStatus.DeviceInError
            diagnostics = await asyncio.to_thread(
                collect_diagnostics, self._started_at, self._data_dir
            )
            self._enqueue(node_data(self.names, now, self.interval, status, diagnostics))
        # Leader only, once per slot; a newly elected leader sends the current slot at once.
        if self.source.is_leader() and self._count_slot != slot:
            self._count_slot = slot
            groups, sessions = self.source.counts()
            self._enqueue(count_data(self.names, slot * self.interval, groups, sessions))
        await asyncio.gather(*(s.flush() for s in self.senders.values()))

    def _enqueue(self, message: Message) -> None:
        for sender in self.senders.values():
            sender.enqueue(message)

    def _reconcile(self, endpoints: tuple[HealthEndpoint, ...]) -> None:
        wanted = {e.id: e for e in endpoints}
        for endpoint_id in list(self.senders):
            sender = self.senders[endpoint_id]
            if wanted.get(endpoint_id) != sender.endpoint:
                del self.senders[endpoint_id]
                task = asyncio.create_task(sender.close())
                self._closing.add(task)  # keep a reference until it ran
                task.add_done_callback(self._closing.discard)
        for endpoint_id, endpoint in wanted.items():
            if endpoint_id not in self.senders:
                log.info("Health endpoint '%s': sending OMF to %s.", endpoint_id, endpoint.endpoint)
                self.senders[endpoint_id] = EndpointSender(
                    endpoint, self.names, self._metrics, self._clock
                )

    async def _send_shutdown(self) -> None:
        now = self._wall()
        message = node_data(self.names, now, self.interval, DeviceStatus.Shutdown, {})
        # Shutdown carries status only: the diagnostics stream gets no empty value.
        message = Message(message.message_type, message.action, message.body[1:])
        self._enqueue(message)
        await asyncio.gather(*(s.flush() for s in self.senders.values()))
