"""Authorization by route (issue 11): every route, every kind of caller, many spellings of a path.

The policy under test is the table "Authorization by route" in docs/security.md, the documented
outcome. It must name every route the app serves exactly once and equal the code's table
(``roles.ROUTE_ROLES``). Then every route is sent, as every kind of caller, through every
spelling below, and each answer is compared with what the table says:

- a spelling of the route itself (ASCII case, one trailing slash, percent-encoded ASCII
  letters) gets the route's decision: 401 without valid credentials, 403 with too small a
  role, else the route's own answer, the same as for the exact spelling;
- every other spelling (Unicode letters that case-fold to ASCII ones, fullwidth letters,
  encoded or doubled slashes, dot segments, suffixes such as ``;x`` or ``.json``, backslashes,
  malformed escapes) is 404 for everyone; a route with another method is 405.

No answer may be a 2xx where the role does not allow it, or a 5xx; after the attempts the
replicated state (users, clients, signing keys, configuration with the log level, groups,
members) is unchanged.

The app gets each request the way uvicorn builds the scope (``raw_path`` the bytes of the
request line, ``path`` percent-decoded once): httpx would normalise dot segments and re-encode
the path first. A smaller set goes to a real ``cfs serve`` over raw sockets.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest
from starlette.requests import ClientDisconnect
from support.clusterkit import Cluster
from support.nodes import ADAPTER, ADMIN, basic, run, settings_for, until

from cfs_cluster import engine
from cfs_cluster.api.app import create_app, route_list
from cfs_cluster.cluster.node import Node
from cfs_cluster.ops.logs import current_level
from cfs_cluster.security import roles
from cfs_cluster.security.tokens import TokenService

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
ISSUER = "http://cfs/identity"
VICTIM = ("victim", "victim-password")  # what an attacker would promote, rotate or remove
IDS = {  # path parameters that name things that exist
    "group_id": "g1",
    "session_id": "s1",
    "name": VICTIM[0],
    "client_id": "plc-victim",
    "member": "n1",
    "endpoint_id": "he1",
    "file": "swagger-ui.css",
    "asset": "app.js",
}
NO_IDS = dict.fromkeys(IDS, "nosuch")  # for allowed writes: nothing to change
G = "/api/v1/clientfailover/groups"
S = G + "/{group_id}/clientsessions"
C = "/api/v1/configuration"
OMF = "http://127.0.0.1:9/omf"  # the discard port: nothing listens
# What an attacker would send to each write: a bypass would show in the replicated state.
ATTACKS: dict[tuple[str, str], Any] = {
    ("POST", G): {"Id": "evil", "FailoverTimeout": "00:01:00"},
    ("POST", S): {"Id": "evil"},
    ("POST", S + "/{session_id}/heartbeat"): {"FailoverScore": 100},
    ("POST", S + "/{session_id}/roleoverride"): {"Value": "Primary"},
    ("POST", "/api/v1/users"): {"Name": "evil", "Password": "evil-pw", "Role": "administrators"},
    ("PUT", "/api/v1/users/{name}"): {"Role": "administrators"},
    ("POST", "/api/v1/clients"): {"ClientId": "evil", "Role": "administrators"},
    ("PUT", "/api/v1/clients/{client_id}"): {"Role": "administrators"},
    ("PUT", C): {"Logging": {"LogLevel": "Debug"}},
    ("PUT", C + "/logging"): {"LogLevel": "Debug"},
    ("POST", C + "/healthEndpoints"): {"Id": "evil", "Endpoint": OMF},
    ("PUT", C + "/healthEndpoints"): [{"Id": "evil", "Endpoint": OMF}],
    ("PUT", C + "/healthEndpoints/{endpoint_id}"): {"Endpoint": OMF + "/evil"},
}

# Letters that some case-insensitive comparison folds to ASCII, or that look like it.
LOOKALIKES = (
    ("s", "\u017f"),  # ſ long s: casefold() and re.IGNORECASE give s
    ("i", "\u0131"),  # ı dotless i: upper() is I
    ("i", "\u0130"),  # İ: lower() is i + combining dot
    ("k", "\u212a"),  # K Kelvin sign: lower() is k
    ("a", "\u212b"),  # Å Angstrom sign
    ("a", "\u0430"),  # Cyrillic а
    ("e", "\u0435"),  # Cyrillic е
    ("o", "\u043e"),  # Cyrillic о
    ("c", "\u0441"),  # Cyrillic с
    ("p", "\u0440"),  # Cyrillic р
    ("ss", "\u00df"),  # ß: casefold() is ss
    ("st", "\ufb06"),  # ﬆ ligature: casefold() is st
    ("fi", "\ufb01"),  # ﬁ ligature
    ("ff", "\ufb00"),  # ﬀ ligature
    ("fl", "\ufb02"),  # ﬂ ligature
)
# What may stand in for the "/" before a fixed part; none of them is a separator.
SEPARATORS = (
    "%2F",
    "%2f",
    "%252F",
    "%EF%BC%8F",  # fullwidth solidus
    "\\",
    "%5C",
    "//",
    "/./",
    "/%2e/",
    "/%2E/",
    "/x/../",
    "/x/%2e%2e/",
    "/x/.%2E/",
)
# Appended to a fixed part: each makes it another (unknown) path.
SUFFIXES = (
    ";x",
    ";",
    "%3Bx",
    "%20",
    "%09",
    "%00",
    ".json",
    ".",
    "%2e",
    "%2F",
    "\\",
    "%5C",
    "~",
    "%",
    "%zz",
    "%C5",  # truncated UTF-8
    "%FF",  # never UTF-8
    "%C0%AF",  # overlong "/"
    "%E2%80%8B",  # zero-width space
    "%C2%A0",  # no-break space
    "%CC%87",  # combining dot above
)
UNKNOWN_PATHS = (
    "//",
    "/api",
    "/api/v1",
    "/api/v1/",
    "/api/v1/nosuch",
    "/api/v1/usersx",
    "/api/v1/users/victim/extra",
    "/api/v1/clientfailover/groups/g1/clientsessions/s1/heartbeat/extra",
    "/.well-known/openid-configuration",
    "/favicon.ico",
    "*",
)
UNAUTHENTICATED = {401, 429}  # 429: a refusal too, should a back-off count these callers


# --------------------------------------------------------------------------- the policy


def documented_table() -> list[tuple[str, str, str | None]]:
    """The rows of "Authorization by route" in docs/security.md: (method, template, role)."""
    section = DOC.read_text().split("### Authorization by route", 1)[1]
    rows = re.findall(r"^\| `([A-Z]+)` \| `([^`]+)` \| (\w+) \|$", section, re.MULTILINE)
    return [(method, path, None if role == "none" else role) for method, path, role in rows]


def app_routes(tmp_path: Path) -> Counter[tuple[str, str]]:
    """Every (method, path template) the FastAPI app behind the front door serves."""
    front: Any = create_app(Node(settings_for(tmp_path)))
    return Counter(route_list(front.app))


def sufficient(role: str | None, required: str | None) -> bool:
    if required == roles.MEMBERS:
        return False  # a member signature opens these routes, no account does
    return required is None or role == roles.ADMINISTRATORS or role == required


def test_every_route_has_exactly_one_row(tmp_path: Path) -> None:
    """Adding a route without deciding its role fails here (and the node would not start)."""
    rows = Counter((method, template) for method, template, _ in roles.ROUTE_ROLES)
    assert set(rows.values()) == {1}, "a route has two rows"
    assert rows == app_routes(tmp_path)


def test_the_documented_table_is_the_code_table(tmp_path: Path) -> None:
    assert documented_table() == list(roles.ROUTE_ROLES)


# --------------------------------------------------------------------------- ASGI like uvicorn


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error_text(self) -> str | None:
        """The ErrorResponse's Error, to tell a route's own 404 from another's."""
        try:
            decoded = json.loads(self.body)
        except ValueError:
            return None
        return decoded.get("Error") if isinstance(decoded, dict) else None


async def send(
    app: Any, method: str, target: bytes, headers: dict[str, str], body: bytes, source: str
) -> Answer:
    """One request, with the scope uvicorn's httptools protocol would build for ``target``."""
    raw_path, _, query = target.partition(b"?")
    path = raw_path.decode("ascii")
    if "%" in path:
        path = unquote(path)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": [
            (b"host", b"cfs"),
            (b"content-length", str(len(body)).encode()),
            *((k.lower().encode(), v.encode()) for k, v in headers.items()),
        ],
        "client": (source, 40000),
        "server": ("127.0.0.1", 5590),
    }
    start: dict[str, Any] = {}
    chunks: list[bytes] = []
    finished = asyncio.Event()
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def reply(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        else:
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                finished.set()
            elif _streams(start):
                raise ClientGone  # an endless stream: its first event is the answer; hang up

    try:
        await asyncio.wait_for(app(scope, receive, reply), timeout=30)
    except TimeoutError:
        return Answer(504, {}, b"no answer within 30 s")
    except (ClientGone, ClientDisconnect):
        pass  # we hung up on a stream after its first event
    except Exception as exc:  # what uvicorn would answer with a 500
        return Answer(500, {}, repr(exc).encode())
    finally:
        finished.set()
    headers_out = {k.decode(): v.decode() for k, v in start.get("headers", [])}
    return Answer(start["status"], headers_out, b"".join(chunks))


class ClientGone(OSError):
    """What a server's send raises once the client hung up."""


def _streams(start: dict[str, Any]) -> bool:
    return (b"content-type", b"text/event-stream") in [
        (k, v.split(b";")[0]) for k, v in start.get("headers", [])
    ]


# --------------------------------------------------------------------------- spellings


@dataclass(frozen=True)
class Spelling:
    label: str
    target: str  # the request target as sent: percent-encoding already applied
    routed: bool  # True: names the route itself; False: names no route (404)


def concrete(template: str, ids: dict[str, str]) -> list[tuple[str, bool]]:
    """The template's segments with the ids filled in: (text, is a fixed part)."""
    parts = []
    for segment in template.strip("/").split("/"):
        if segment.startswith("{"):
            parts.append((ids[segment[1:-1]], False))
        else:
            parts.append((segment, True))
    return parts


def spellings(template: str, ids: dict[str, str]) -> Iterator[Spelling]:
    if template == "/":  # the root has no letters to disguise, only separators
        yield Spelling("exact", "/", True)
        for other in ("//", "/.", "/..", "/%2e", "/%2F", "/%20", "/;x", "/%00", "\\"):
            yield Spelling(f"root as {other!r}", other, False)
        return
    parts = concrete(template, ids)
    texts = [text for text, _ in parts]
    fixed = [i for i, (_, is_fixed) in enumerate(parts) if is_fixed]
    last = fixed[-1]

    def spelled(change: Callable[[str], str], only: int | None = None) -> list[str]:
        return [
            change(text) if is_fixed and only in (None, i) else text
            for i, (text, is_fixed) in enumerate(parts)
        ]

    def path(texts: list[str], end: str = "") -> str:
        return "/" + "/".join(texts) + end

    yield Spelling("exact", path(texts), True)
    yield Spelling("upper case", path(spelled(str.upper)), True)
    yield Spelling("mixed case", path(spelled(_mixed)), True)
    yield Spelling("trailing slash", path(texts, "/"), True)
    yield Spelling("mixed case, trailing slash", path(spelled(_mixed), "/"), True)
    yield Spelling("%XX letters", path(spelled(_escaped, last)), True)
    yield Spelling("%xx letters", path(spelled(lambda t: _escaped(t).lower(), last)), True)
    for i in fixed:
        for letters, lookalike in LOOKALIKES:
            at = texts[i].lower().find(letters)
            if at >= 0:
                text = texts[i][:at] + quote(lookalike) + texts[i][at + len(letters) :]
                yield Spelling(f"{lookalike!r} for {letters!r}", path(_put(texts, i, text)), False)
        yield Spelling("fullwidth letter", path(_put(texts, i, _fullwidth(texts[i]))), False)
    yield Spelling("%c5%bf (lower-case hex)", path(_put(texts, last, _long_s(texts[last]))), False)
    # Between two fixed parts, so that no id can swallow the result and name another route.
    pairs = [i for i in fixed if i - 1 in fixed]
    for separator in SEPARATORS:
        if pairs:
            at = pairs[-1]
            target = path(texts[:at]) + separator + "/".join(texts[at:])
        else:
            target = (separator if separator.startswith("/") else "/" + separator) + texts[0]
        yield Spelling(f"separator {separator!r}", target, False)
    for suffix in SUFFIXES:
        yield Spelling(f"suffix {suffix!r}", path(_put(texts, last, texts[last] + suffix)), False)
    yield Spelling("leading %20", path(_put(texts, last, "%20" + texts[last])), False)
    yield Spelling("leading //", "/" + path(texts), False)
    for end in ("//", "/.", "/..", "/%2e", "/%2E%2E", "%2F"):
        yield Spelling(f"ends {end!r}", path(texts, end), False)


def _mixed(text: str) -> str:
    return "".join(c.upper() if n % 2 else c.lower() for n, c in enumerate(text))


def _escaped(text: str) -> str:
    return "".join(f"%{ord(c):02X}" if c.isalpha() else c for c in text)


def _fullwidth(text: str) -> str:
    at = next(n for n, c in enumerate(text) if c.isalpha())
    return text[:at] + quote(chr(ord(text[at]) + 0xFEE0)) + text[at + 1 :]


def _long_s(text: str) -> str:
    """``text`` with its first s replaced by ſ, in lower-case hex (appended if it has none)."""
    return text.replace("s", "%c5%bf", 1) if "s" in text else text + "%c5%bf"


def _put(texts: list[str], index: int, text: str) -> list[str]:
    return [text if n == index else t for n, t in enumerate(texts)]


# --------------------------------------------------------------------------- callers


@dataclass(frozen=True)
class Caller:
    name: str
    role: str | None  # what its credentials are worth; None: not authenticated
    credentials: Callable[[], dict[str, str]]  # fresh each request: keys may rotate
    source: str  # its own address, so no caller's back-off touches another


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def callers(node: Node, client: httpx.AsyncClient) -> list[Caller]:
    """Every kind of caller, with the users, clients and tokens it needs."""
    admin = basic(*ADMIN)
    for name, password in (ADAPTER, VICTIM):
        body = {"Name": name, "Password": password, "Role": "users"}
        assert (await client.post("/api/v1/users", json=body, headers=admin)).status_code == 201
    secrets = {}
    for client_id, role in (("plc-users", "users"), ("plc-admin", "administrators")):
        body = {"ClientId": client_id, "Role": role}
        response = await client.post("/api/v1/clients", json=body, headers=admin)
        assert response.status_code == 201, response.text
        secrets[client_id] = response.json()["ClientSecret"]
    body = {"ClientId": "plc-victim", "Role": "users"}
    assert (await client.post("/api/v1/clients", json=body, headers=admin)).status_code == 201
    form = {"grant_type": "client_credentials", "client_id": "plc-admin"}
    form["client_secret"] = secrets["plc-admin"]
    response = await client.post("/identity/connect/token", data=form)  # makes the first key
    assert response.status_code == 200, response.text
    tokens = node.auth.tokens
    assert tokens is not None
    key = tokens.signing_key()
    assert key is not None

    def token_of(client_id: str, service: TokenService = tokens) -> str:
        signer = tokens.signing_key()
        assert signer is not None
        return service.issue(node.replicator.state.clients[client_id], ISSUER, signer)

    hour_ago = TokenService(lambda: node.replicator.state, 60, clock=lambda: time.time() - 3600)
    expired = token_of("plc-admin", hour_ago)
    forger = engine.SigningKey(key.kid, os.urandom(32).hex(), key.created_at)
    forged = tokens.issue(node.replicator.state.clients["plc-admin"], ISSUER, forger)
    return [
        Caller("anonymous", None, dict, "127.0.0.11"),
        Caller("users (Basic)", roles.USERS, lambda: basic(*ADAPTER), "127.0.0.12"),
        Caller("administrators (Basic)", roles.ADMINISTRATORS, lambda: admin, "127.0.0.13"),
        Caller("users client", roles.USERS, lambda: bearer(token_of("plc-users")), "127.0.0.14"),
        Caller(
            "administrators client",
            roles.ADMINISTRATORS,
            lambda: bearer(token_of("plc-admin")),
            "127.0.0.15",
        ),
        Caller("expired token", None, lambda: bearer(expired), "127.0.0.16"),
        Caller("forged token", None, lambda: bearer(forged), "127.0.0.17"),
    ]


# --------------------------------------------------------------------------- the matrix

JSON = {"Content-Type": "application/json"}
READS = ("GET", "HEAD")


class Findings:
    """Every answer that differs from the documented outcome, sorted by how bad it is."""

    def __init__(self) -> None:
        self.cases = 0
        self.wrong: list[tuple[str, str]] = []

    def expect(
        self, case: str, answer: Answer, allowed: set[int], *, caller_may: bool = False
    ) -> None:
        """``caller_may``: the caller's role allows the route this spelling resembles."""
        self.cases += 1
        if answer.status in allowed:
            return
        if 200 <= answer.status < 300:
            kind = "served a path that is no route" if caller_may else "2xx without the role"
        elif answer.status >= 500:
            kind = "5xx"
        else:
            kind = "another answer"
        self.wrong.append((kind, f"{case}: {answer.status}, documented {sorted(allowed)}"))

    def same(self, case: str, answer: Answer, exact: Answer) -> None:
        self.cases += 1
        if (answer.status, answer.error_text()) != (exact.status, exact.error_text()):
            kind = "5xx" if answer.status >= 500 else "a spelling of the route answers otherwise"
            self.wrong.append((kind, f"{case}: {answer.status}, exact spelling {exact.status}"))

    def report(self, changed: list[str]) -> str:
        kinds = Counter(kind for kind, _ in self.wrong)
        lines = [
            f"{len(self.wrong)} of {self.cases} answers differ from docs/security.md: "
            + ", ".join(f"{count} {kind}" for kind, count in kinds.most_common()),
            f"replicated state changed: {changed or 'no'}",
        ]
        for kind, _ in kinds.most_common():  # the first few of each kind
            lines += [f"  [{kind}] {case}" for k, case in self.wrong if k == kind][:8]
        return "\n".join(lines)


async def attack(app: Any, people: list[Caller], findings: Findings) -> None:
    """Everything that must be refused: too small a role, no route, another method."""
    table = documented_table()
    for method, template, role in table:
        payload = ATTACKS.get((method, template), {}) if method not in READS else None
        body = b"" if payload is None else json.dumps(payload).encode()
        for caller in people:
            may = sufficient(caller.role, role)
            for spelling in spellings(template, IDS):
                if spelling.routed and may:
                    continue  # allowed: reach() checks these
                refused = {404} if not spelling.routed else _refusal(caller, role)
                answer = await send(
                    app,
                    method,
                    spelling.target.encode(),
                    {**caller.credentials(), **JSON},
                    body,
                    caller.source,
                )
                case = f"{caller.name} {method} {spelling.target} [{spelling.label}; {template}]"
                findings.expect(case, answer, refused, caller_may=may)
    await _other_methods(app, table, people, findings)
    for caller in people:
        for method in ("GET", "POST"):
            for target in UNKNOWN_PATHS:
                answer = await send(
                    app, method, target.encode(), caller.credentials(), b"", caller.source
                )
                findings.expect(f"{caller.name} {method} {target} [unknown path]", answer, {404})


def _refusal(caller: Caller, required: str | None) -> set[int]:
    if required == roles.MEMBERS:
        return {401}  # no member signature: no account's credentials count here
    return UNAUTHENTICATED if caller.role is None else {403}


async def _other_methods(
    app: Any, table: list[tuple[str, str, str | None]], people: list[Caller], findings: Findings
) -> None:
    allowed: dict[str, set[str]] = {}
    for method, template, _ in table:
        allowed.setdefault(template, set()).add(method)
    for template, methods in allowed.items():
        others = [m for m in ("PATCH", "DELETE", "PUT", "POST", "GET") if m not in methods][:2]
        target = spellings(template, IDS).__next__().target.encode()
        for caller, method in ((c, m) for c in people for m in others):
            answer = await send(app, method, target, caller.credentials(), b"{}", caller.source)
            case = f"{caller.name} {method} {template} [another method]"
            findings.expect(case, answer, {405})
            if answer.status == 405 and set(answer.headers["allow"].split(", ")) != methods:
                findings.wrong.append(("another answer", f"{case}: Allow {answer.headers}"))


async def reach(app: Any, people: list[Caller], findings: Findings) -> None:
    """Every spelling of a route reaches it for a caller whose role allows it: the same answer
    as the exact spelling, 2xx for the reads. Writes go to ids that do not exist, with a body
    that is no JSON, and run after every read (one of them deletes every health endpoint)."""
    table = documented_table()
    rows = [row for row in table if row[0] in READS] + [r for r in table if r[0] not in READS]
    for method, template, role in rows:
        write = method not in READS
        ids, body = (NO_IDS, b"{") if write else (IDS, b"")
        for caller in (c for c in people if sufficient(c.role, role)):
            exact, *others = [s for s in spellings(template, ids) if s.routed]
            headers = {**caller.credentials(), **JSON}
            first = await send(app, method, exact.target.encode(), headers, body, caller.source)
            case = f"{caller.name} {method} {exact.target}"
            # "/" and "/ui" redirect to the dashboard page "/ui/": a 307 is their answer.
            ok = set(range(200, 300)) | ({307} if template in ("/", "/ui") else set())
            if template == "/api/v1/dashboard/me":
                ok |= {401}  # public, but it checks whatever credentials it is sent itself
            findings.expect(case, first, ok if not write else {first.status})
            for spelling in others:
                headers = {**caller.credentials(), **JSON}
                target = spelling.target.encode()
                answer = await send(app, method, target, headers, body, caller.source)
                if template == "/ui":  # /ui redirects to /ui/, the page (its URLs are relative)
                    case = f"{caller.name} {method} {spelling.target}"
                    findings.expect(case, answer, {200, 307})
                    continue
                findings.same(f"{caller.name} {method} {spelling.target}", answer, first)


def snapshot(node: Node) -> dict[str, Any]:
    """What no refused request may change."""
    with node.replicator.read() as state:
        groups = {
            group.id: (
                group.name,
                group.timeout,
                group.primary,
                {
                    s.id: (s.override, s.override_expiry, s.heartbeat)
                    for s in group.sessions.values()
                },
            )
            for group in state.groups.values()
        }
        return copy.deepcopy(
            {
                "users": state.users,
                "clients": state.clients,
                "signing keys": state.signing_keys,
                "configuration": state.config,
                "members": state.members,
                "groups": groups,
                "log level": current_level(),
            }
        )


@asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[tuple[Node, Any, httpx.AsyncClient]]:
    """A single-node cluster with --auth required and a bootstrap administrator."""
    bootstrap = f"{ADMIN[0]}:{ADMIN[1]}"
    node = Node(settings_for(tmp_path, auth="required", bootstrap_admin=bootstrap))
    app = create_app(node)
    await node.start()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cfs") as client:

            async def bootstrapped() -> bool:
                ready = (await client.get("/readyz")).status_code == 200
                return ready and bool(node.users())

            await until(bootstrapped, "node ready with its administrator")
            yield node, app, client
    finally:
        await node.stop()


async def populate(client: httpx.AsyncClient) -> None:
    """The group, session and health endpoint the ids in IDS name."""
    admin = basic(*ADMIN)
    for url, body in (
        (G, {"Id": "g1", "FailoverTimeout": "00:05:00"}),
        (f"{G}/g1/clientsessions", {"Id": "s1"}),
        (f"{C}/healthEndpoints", {"Id": "he1", "Endpoint": OMF}),
    ):
        response = await client.post(url, json=body, headers=admin)
        assert response.status_code == 201, response.text


def test_no_spelling_of_any_route_gets_past_its_role(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with served(tmp_path) as (node, app, client):
            people = await callers(node, client)
            await populate(client)
            findings = Findings()
            before = snapshot(node)
            await attack(app, people, findings)
            after = snapshot(node)
            changed = [what for what in before if before[what] != after[what]]
            await reach(app, people, findings)
            assert not findings.wrong and not changed, findings.report(changed)

    run(scenario())


# --------------------------------------------------------------------------- over uvicorn


def raw_request(
    port: int, method: str, target: bytes, headers: dict[str, str], body: bytes = b""
) -> int:
    """The status of one request sent byte for byte (0: closed without an answer)."""
    lines = [
        method.encode() + b" " + target + b" HTTP/1.1",
        b"Host: 127.0.0.1",
        b"Connection: close",
        b"Content-Type: application/json",
        b"Content-Length: " + str(len(body)).encode(),
        *(f"{name}: {value}".encode() for name, value in headers.items()),
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    status_line = received.split(b"\r\n", 1)[0].split()
    return int(status_line[1]) if len(status_line) > 1 else 0


@pytest.mark.cluster
def test_the_same_over_uvicorn(tmp_path: Path) -> None:
    """The bypasses of issue 11 and their neighbours against a real `cfs serve`."""
    env = {"CFS_BOOTSTRAP_ADMIN": f"{ADMIN[0]}:{ADMIN[1]}"}
    with Cluster(tmp_path, size=1, env=env, extra_args=["--auth", "required"]) as cluster:
        http, url, port = cluster.client, cluster.urls[0], cluster.nodes[0].api_port
        admin, adapter = basic(*ADMIN), basic(*ADAPTER)
        deadline = time.monotonic() + 15
        while http.get(f"{url}/api/v1/users", headers=admin).status_code != 200:
            assert time.monotonic() < deadline, "the bootstrap administrator never appeared"
            time.sleep(0.05)
        user = {"Name": ADAPTER[0], "Password": ADAPTER[1], "Role": "users"}
        assert http.post(f"{url}/api/v1/users", json=user, headers=admin).status_code == 201
        group = {"Id": "g", "FailoverTimeout": "00:05:00"}
        assert http.post(url + G, json=group, headers=admin).status_code == 201
        session = {"Id": "s"}
        assert http.post(f"{url}{G}/g/clientsessions", json=session, headers=admin).status_code
        watched = ("/api/v1/users", "/api/v1/clients", C, "/api/v1/identity/signing-keys", G)

        def state() -> list[Any]:
            return [http.get(url + path, headers=admin).json() for path in watched]

        before = state()
        evil = json.dumps({"Name": "evil", "Password": "evil-pw", "Role": "administrators"})
        beat = json.dumps({"FailoverScore": 1}).encode()
        hb = b"/api/v1/clientfailover/groups/g/clientsessions/s/"
        cases: list[tuple[str, bytes, dict[str, str], bytes, set[int]]] = [
            ("GET", b"/api/v1/u%C5%BFers", adapter, b"", {404}),
            ("POST", b"/api/v1/u%C5%BFers", adapter, evil.encode(), {404}),
            ("POST", b"/api/v1/u%c5%bfers/", adapter, evil.encode(), {404}),
            ("GET", b"/api/v1/clu%C5%BFter/backup", adapter, b"", {404}),
            ("PUT", b"/api/v1/configuration/logg%C4%B1ng", adapter, b'{"LogLevel":"Debug"}', {404}),
            ("POST", b"/api/v1/identity/signing-%E2%84%AAeys/rotate", adapter, b"", {404}),
            ("GET", b"/api/v1/%EF%BD%95sers", adapter, b"", {404}),
            ("GET", b"/api/v1/u\xc5\xbfers", adapter, b"", {400, 404}),  # raw UTF-8 on the wire
            ("GET", b"/api/v1/cluster%2Fbackup", adapter, b"", {404}),
            ("GET", b"/api/v1/cluster%252Fbackup", adapter, b"", {404}),
            ("GET", b"/api/v1//users", adapter, b"", {404}),
            ("GET", b"/api/v1/./users", adapter, b"", {404}),
            ("GET", b"/api/v1/x/../users", adapter, b"", {404}),
            ("GET", b"/api/v1/%2e/users", adapter, b"", {404}),
            ("GET", b"/api/v1\\users", adapter, b"", {400, 404}),
            ("GET", b"/api/v1/users;x", adapter, b"", {404}),
            ("GET", b"/api/v1/users%00", adapter, b"", {404}),
            ("GET", b"/api/v1/users.json", adapter, b"", {404}),
            ("POST", hb + b"he%D0%B0rtbeat", adapter, beat, {404}),
            ("GET", b"/nosuch", {}, b"", {404}),
            ("PATCH", b"/api/v1/users", {}, b"", {405}),
            ("GET", b"/API/V1/USERS", adapter, b"", {403}),
            ("POST", hb + b"heartbeat", {}, beat, {401}),
            ("GET", b"/API/V1/USERS/", admin, b"", {200}),
            ("GET", b"/api/v1/u%73ers", admin, b"", {200}),
            ("GET", b"/Api/V1/ClientFailover/Groups/", adapter, b"", {200}),
            ("POST", hb.upper().replace(b"/G/", b"/g/").replace(b"/S/", b"/s/") + b"HeartBeat/",
             adapter, beat, {200}),
        ]  # fmt: skip
        answers = [(m, t, raw_request(port, m, t, h, b), ok) for m, t, h, b, ok in cases]
        wrong = [(m, t, got) for m, t, got, ok in answers if got not in ok]
        assert not wrong, wrong
        assert state() == before
