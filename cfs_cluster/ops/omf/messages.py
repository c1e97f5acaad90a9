"""The OMF 1.2 message model: types, containers, the asset hierarchy, data and splitting.

Pure: no I/O. Type ids and definitions are constants (``TYPE_VERSION``): OMF types are
immutable and PI Web API answers 409 to a changed definition (spec §6.4), so they must never
change between releases.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from cfs_cluster.protocol.wire import format_datetime, ticks_from_unix

TYPE_VERSION = "1.0.0.0"
TYPE_PREFIX = "CfsCluster."
OMF_VERSION = "1.2"
MAX_BODY_BYTES = 192 * 1024  # PI Web API refuses larger OMF bodies with 413


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


def omf_time(unix: float) -> str:
    """A Unix time as the .NET DateTime text OMF data carries."""
    return format_datetime(ticks_from_unix(unix))


def node_data(
    names: Names, now: float, interval: float, status: DeviceStatus, diagnostics: dict[str, Any]
) -> Message:
    stamp = omf_time(now)
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
                    {"Timestamp": stamp, "NextHealthMessageExpected": omf_time(now + interval)}
                ],
            },
        ),
    )


def count_data(names: Names, slot_start: float, groups: int, sessions: int) -> Message:
    """Cluster-wide counts at the slot's start; ``update`` makes a resend by another leader idempotent."""
    value = {"Timestamp": omf_time(slot_start), "Groups": groups, "Sessions": sessions}
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
