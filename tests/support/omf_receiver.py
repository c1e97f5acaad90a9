"""A real OMF endpoint for tests, enforcing the rules PI Web API enforces (spec §6.3).

- Headers ``messagetype`` (type|container|data), ``messageformat: json``, ``omfversion: 1.2``;
  ``action`` create (default), update or delete.
- Body: a JSON array, at most 192 KB (else 413).
- A type before any container that uses it, a container before data for it, static data and
  ``__Link`` only for known types, indexes and containers (else 400).
- Redefining a type differently: 409. Optional Basic credentials: 401 without them.
- ``fail_next`` makes the next requests answer a given status and headers (503 + Retry-After).
"""

from __future__ import annotations

import base64
import json
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from support.clusterkit import free_ports

MAX_BODY = 192 * 1024


@dataclass
class Request:
    headers: dict[str, str]
    body: Any
    status: int


@dataclass
class Store:
    types: dict[str, dict[str, Any]] = field(default_factory=dict)
    containers: dict[str, str] = field(default_factory=dict)  # id -> typeid
    static: dict[str, set[str]] = field(
        default_factory=lambda: defaultdict(set)
    )  # typeid -> indexes
    links: list[tuple[Any, Any]] = field(default_factory=list)
    # container id -> timestamp -> values posted (an update replaces, a create appends)
    values: dict[str, dict[str, list[dict[str, Any]]]] = field(
        default_factory=lambda: defaultdict(dict)
    )


class OmfError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class OmfReceiver:
    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}/piwebapi/omf"
        self.credentials = credentials
        self.store = Store()
        self.requests: list[Request] = []
        self.fail_next: list[tuple[int, dict[str, str]]] = []
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> OmfReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ----------------------------------------------------------------- queries

    def wait_for(self, predicate: Any, timeout: float) -> bool:
        with self.changed:
            return bool(self.changed.wait_for(lambda: predicate(self), timeout))

    def series(self, container: str) -> list[tuple[str, list[dict[str, Any]]]]:
        with self.lock:
            return sorted((ts, list(v)) for ts, v in self.store.values.get(container, {}).items())

    # ----------------------------------------------------------------- handling

    def _handle(self, http: BaseHTTPRequestHandler) -> None:
        headers = {k.lower(): v for k, v in http.headers.items()}
        length = int(headers.get("content-length", "0"))
        raw = http.rfile.read(length) if length <= MAX_BODY else b""
        if length > MAX_BODY:
            http.rfile.read(length)
        with self.changed:
            status, reason, extra = self._decide(headers, raw, length)
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            self.requests.append(Request(headers, body, status))
            self.changed.notify_all()
        payload = json.dumps({"Message": reason}).encode()
        http.send_response(status)
        for name, value in extra.items():
            http.send_header(name, value)
        http.send_header("Content-Length", str(len(payload)))
        http.end_headers()
        http.wfile.write(payload)

    def _decide(
        self, headers: dict[str, str], raw: bytes, length: int
    ) -> tuple[int, str, dict[str, str]]:
        if self.fail_next:
            status, extra = self.fail_next.pop(0)
            return status, "injected failure", extra
        try:
            self._check_auth(headers)
            if length > MAX_BODY:
                raise OmfError(413, "body larger than 192 KB")
            kind, action = self._check_headers(headers)
            body = json.loads(raw)
            if not isinstance(body, list):
                raise OmfError(400, "body must be a JSON array")
            {"type": self._types, "container": self._containers, "data": self._data}[kind](
                body, action
            )
        except OmfError as exc:
            return exc.status, str(exc), {}
        except (ValueError, KeyError, TypeError) as exc:
            return 400, f"malformed: {exc}", {}
        return 202, "Accepted", {}

    def _check_auth(self, headers: dict[str, str]) -> None:
        if self.credentials is None:
            return
        expected = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
        if headers.get("authorization") != expected:
            raise OmfError(401, "Unauthorized")

    def _check_headers(self, headers: dict[str, str]) -> tuple[str, str]:
        kind = headers.get("messagetype", "").lower()
        if kind not in ("type", "container", "data"):
            raise OmfError(400, "messagetype header missing or invalid")
        if headers.get("messageformat", "").lower() != "json":
            raise OmfError(400, "messageformat header must be JSON")
        if headers.get("omfversion") != "1.2":
            raise OmfError(400, "omfversion header must be 1.2")
        action = headers.get("action", "create").lower()
        if action not in ("create", "update", "delete"):
            raise OmfError(400, "invalid action")
        return kind, action

    def _types(self, body: list[Any], action: str) -> None:
        for item in body:
            if item.get("type") != "object" or item.get("classification") not in (
                "static",
                "dynamic",
            ):
                raise OmfError(400, f"invalid type {item.get('id')}")
            if not isinstance(item.get("properties"), dict):
                raise OmfError(400, "type without properties")
            old = self.store.types.get(item["id"])
            if old is not None and old != item:
                raise OmfError(409, f"type {item['id']} exists with another definition")
        for item in body:
            self.store.types[item["id"]] = item

    def _containers(self, body: list[Any], action: str) -> None:
        for item in body:
            if item["typeid"] not in self.store.types:
                raise OmfError(
                    400, f"container {item['id']} references unknown type {item['typeid']}"
                )
            old = self.store.containers.get(item["id"])
            if old is not None and old != item["typeid"] and action == "create":
                raise OmfError(409, f"container {item['id']} exists with another type")
        for item in body:
            self.store.containers[item["id"]] = item["typeid"]

    def _data(self, body: list[Any], action: str) -> None:
        for item in body:  # validate everything first: a refused message changes nothing
            if "containerid" in item:
                if item["containerid"] not in self.store.containers:
                    raise OmfError(400, f"data for unknown container {item['containerid']}")
            elif item.get("typeid") == "__Link":
                for link in item["values"]:
                    self._check_ref(link["source"])
                    self._check_ref(link["target"])
            elif item.get("typeid") not in self.store.types:
                raise OmfError(400, f"static data for unknown type {item.get('typeid')}")
        for item in body:
            if "containerid" in item:
                series = self.store.values[item["containerid"]]
                index = self._index_of(self.store.containers[item["containerid"]])
                for value in item["values"]:
                    stamp = value[index]
                    if action == "update" or stamp not in series:
                        series[stamp] = [value]
                    else:
                        series[stamp].append(value)  # PI keeps a duplicate
            elif item["typeid"] == "__Link":
                self.store.links.extend((v["source"], v["target"]) for v in item["values"])
            else:
                type_def = self.store.types[item["typeid"]]
                index = next(k for k, p in type_def["properties"].items() if p.get("isindex"))
                self.store.static[item["typeid"]].update(v[index] for v in item["values"])

    def _index_of(self, type_id: str) -> str:
        """The type's index property (``Timestamp`` for the service, ``Time`` for the
        adapter framework's health types): a value without it is malformed."""
        properties = self.store.types[type_id]["properties"]
        return next(name for name, p in properties.items() if p.get("isindex"))

    def _check_ref(self, ref: dict[str, Any]) -> None:
        if "containerid" in ref:
            if ref["containerid"] not in self.store.containers:
                raise OmfError(400, f"link to unknown container {ref['containerid']}")
            return
        if ref["typeid"] not in self.store.types:
            raise OmfError(400, f"link to unknown type {ref['typeid']}")
        if ref["index"] != "_ROOT" and ref["index"] not in self.store.static[ref["typeid"]]:
            raise OmfError(400, f"link to unknown element {ref['index']}")
