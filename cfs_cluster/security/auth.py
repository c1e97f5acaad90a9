"""Authentication and authorization of API requests (spec §8.1, docs/security.md).

- HTTP Basic against the replicated user store; two roles, ``users`` (adapters) and
  ``administrators``. ``ROUTE_ROLES`` is the one table of who may call which route.
- Passwords are stored as scrypt hashes. Hashing happens on the receiving node *before* a
  command is replicated (apply must stay deterministic and cheap), and verification runs in a
  worker thread so a 50 ms hash never stalls the event loop.
- Verified credentials are cached, keyed by an HMAC of the Authorization header under a
  per-process key, and tied to the password hash they were checked against: a password change
  or removal invalidates them at once, with no explicit cache flush across nodes.
- Back-off (``Backoff``): wrong credentials are counted per account and per source address;
  either count past its threshold makes further attempts wait (429 + Retry-After, growing
  exponentially) before any hash is computed. Each attempt is counted *before* it is hashed, so
  parallel guesses cannot all slip through. Credentials already verified (cached) and Bearer
  tokens never wait: a blocked address (say, the proxy every adapter connects through) locks
  out no adapter. The source is the peer address, or the client named in X-Forwarded-For when
  the peer is a configured trusted proxy.
- ``Authorization: Bearer`` carries an OAuth access token (tokens.py) and is accepted wherever
  Basic is; a token check is a cached dict lookup, no hash.
- ``--auth required`` (the default) enforces all of this; ``--auth off`` (loopback only,
  settings.py) checks nothing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import ipaddress
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from cfs_cluster import engine
from cfs_cluster.errors import (
    BadRequest,
    CfsError,
    Forbidden,
    InvalidToken,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from cfs_cluster.protocol.heartbeat import PING_PATH, READ_PATH, RELAY_PATH
from cfs_cluster.security.memberauth import Caller
from cfs_cluster.security.tokens import Principal, TokenService
from cfs_cluster.settings import SecuritySettings

__all__ = [
    "ADMINISTRATORS",
    "MEMBERS",
    "ROUTE_ROLES",
    "USERS",
    "Authenticator",
    "Backoff",
    "check_user_name",
    "hash_password",
    "parse_role",
    "required_role",
    "verify_known",
    "verify_password",
]

USERS = "users"
ADMINISTRATORS = engine.ADMINISTRATORS
_ROLE_ALIASES = {
    "users": USERS,
    "user": USERS,
    "avevafailoverusers": USERS,
    "administrators": ADMINISTRATORS,
    "administrator": ADMINISTRATORS,
    "admin": ADMINISTRATORS,
    "avevafailoveradministrators": ADMINISTRATORS,
}
REALM_HEADER = (b"www-authenticate", b'Basic realm="cfs", charset="UTF-8"')
BEARER_HEADER = (b"www-authenticate", b'Bearer realm="cfs"')
INVALID_TOKEN_HEADER = (b"www-authenticate", b'Bearer realm="cfs", error="invalid_token"')
MAX_PASSWORD_LENGTH = 1024
MAX_NAME_LENGTH = 64
_CACHE_SIZE = 10_000
_TRACKED_SOURCES = 10_000  # accounts, sources and pairs each; the least recent is dropped
_FAILURE_MEMORY = 600.0  # seconds after the newest failure that a count is forgotten
NO_USERS_YET = (
    "This node has no users yet: it has not joined the cluster (cfs cluster add-node) "
    "or no administrator was created (CFS_BOOTSTRAP_ADMIN)."
)

# scrypt cost: ~16 MiB and tens of milliseconds per hash; stored with the hash so it can grow.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 1 << 14, 8, 1


# --------------------------------------------------------------------------- passwords


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = _scrypt(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    return "$".join(
        ["scrypt", str(_SCRYPT_N), str(_SCRYPT_R), str(_SCRYPT_P), _b64(salt), _b64(digest)]
    )


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a ``hash_password`` string; False if malformed."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + (1 << 20), dklen=32
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# A hash nobody's password matches, verified for unknown users so timing does not reveal names.
_DUMMY_HASH = hash_password(os.urandom(16).hex())


def verify_known(password: str, stored: str | None) -> bool:
    """``verify_password`` against ``stored``, or False at the same cost when there is none
    (an unknown user or client): timing does not reveal which names exist."""
    ok = verify_password(password, stored if stored is not None else _DUMMY_HASH)
    return ok and stored is not None


# --------------------------------------------------------------------------- validation


def check_user_name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest("Name is required and must be a non-empty string.")
    if len(value) > MAX_NAME_LENGTH or not value.isprintable() or ":" in value or "/" in value:
        raise BadRequest(
            f"Name must be at most {MAX_NAME_LENGTH} printable characters without ':' or '/'."
        )
    return value


def check_password(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise BadRequest("Password is required and must be a non-empty string.")
    if len(value) > MAX_PASSWORD_LENGTH:
        raise BadRequest(f"Password is longer than {MAX_PASSWORD_LENGTH} characters.")
    return value


def parse_role(value: object) -> str:
    role = _ROLE_ALIASES.get(value.lower()) if isinstance(value, str) else None
    if role is None:
        raise BadRequest("Role must be 'users' or 'administrators'.")
    return role


# --------------------------------------------------------------------------- roles

_GROUP = "/api/v1/clientfailover/groups/{group_id}"
_SESSION = _GROUP + "/clientsessions/{session_id}"
_CONFIG = "/api/v1/configuration"
_ANYONE = None  # public: no credentials needed
# The members' internal channel: no user may call it; the front door serves these routes only
# to a request whose member signature verifies (security/memberauth.py).
MEMBERS = "members"

# Who may call what: one row per route the app serves, (method, path template, role needed).
# The front door reads a request's path as one of these routes (api/routes.py) and asks for
# the role of that row; create_app refuses to start unless the rows and the app's routes are
# the same set. docs/security.md "Authorization by route" is this table
# (tests/test_authorization.py keeps them equal).
ROUTE_ROLES: tuple[tuple[str, str, str | None], ...] = (
    ("GET", "/healthz", _ANYONE),  # load balancers
    ("GET", "/readyz", _ANYONE),
    ("GET", "/identity/.well-known/openid-configuration", _ANYONE),
    ("POST", "/identity/connect/token", _ANYONE),  # authenticates the client itself
    ("GET", "/static-offline-docs/{file}", _ANYONE),  # Swagger UI and ReDoc's own files
    ("HEAD", "/static-offline-docs/{file}", _ANYONE),
    ("POST", RELAY_PATH, MEMBERS),
    ("POST", READ_PATH, MEMBERS),
    ("GET", PING_PATH, MEMBERS),
    ("GET", "/openapi.json", USERS),
    ("HEAD", "/openapi.json", USERS),
    ("GET", "/docs", USERS),
    ("GET", "/docs/oauth2-redirect", USERS),
    ("GET", "/redoc", USERS),
    ("GET", "/metrics", USERS),
    ("GET", "/api/v1/clientfailover", USERS),
    ("GET", "/api/v1/clientfailover/groups", USERS),
    ("POST", "/api/v1/clientfailover/groups", USERS),
    ("GET", _GROUP, USERS),
    ("DELETE", _GROUP, ADMINISTRATORS),
    ("GET", _GROUP + "/status", USERS),
    ("GET", _GROUP + "/events", USERS),
    ("GET", _GROUP + "/clientsessions", USERS),
    ("POST", _GROUP + "/clientsessions", USERS),
    ("GET", _SESSION, USERS),
    ("DELETE", _SESSION, USERS),  # an adapter unregisters itself
    ("POST", _SESSION + "/heartbeat", USERS),
    ("GET", _SESSION + "/role", USERS),
    ("POST", _SESSION + "/roleoverride", ADMINISTRATORS),
    ("GET", "/api/v1/cluster", USERS),
    ("GET", "/api/v1/cluster/backup", ADMINISTRATORS),  # secrets' hashes and signing keys
    ("POST", "/api/v1/cluster/members", ADMINISTRATORS),
    ("DELETE", "/api/v1/cluster/members/{member}", ADMINISTRATORS),
    ("POST", "/api/v1/cluster/transfer-leader", ADMINISTRATORS),
    ("POST", "/api/v1/cluster/member-key/rotate", ADMINISTRATORS),
    ("GET", "/api/v1/users", ADMINISTRATORS),
    ("POST", "/api/v1/users", ADMINISTRATORS),
    ("GET", "/api/v1/users/{name}", ADMINISTRATORS),
    ("PUT", "/api/v1/users/{name}", ADMINISTRATORS),
    ("DELETE", "/api/v1/users/{name}", ADMINISTRATORS),
    ("GET", "/api/v1/clients", ADMINISTRATORS),
    ("POST", "/api/v1/clients", ADMINISTRATORS),
    ("GET", "/api/v1/clients/{client_id}", ADMINISTRATORS),
    ("PUT", "/api/v1/clients/{client_id}", ADMINISTRATORS),
    ("DELETE", "/api/v1/clients/{client_id}", ADMINISTRATORS),
    ("POST", "/api/v1/clients/{client_id}/secret", ADMINISTRATORS),
    ("GET", "/api/v1/identity/signing-keys", ADMINISTRATORS),
    ("POST", "/api/v1/identity/signing-keys/rotate", ADMINISTRATORS),
    ("GET", _CONFIG, ADMINISTRATORS),
    ("PUT", _CONFIG, ADMINISTRATORS),
    ("GET", _CONFIG + "/logging", ADMINISTRATORS),
    ("PUT", _CONFIG + "/logging", ADMINISTRATORS),
    ("GET", _CONFIG + "/healthEndpoints", ADMINISTRATORS),
    ("POST", _CONFIG + "/healthEndpoints", ADMINISTRATORS),
    ("PUT", _CONFIG + "/healthEndpoints", ADMINISTRATORS),
    ("DELETE", _CONFIG + "/healthEndpoints", ADMINISTRATORS),
    ("GET", _CONFIG + "/healthEndpoints/{endpoint_id}", ADMINISTRATORS),
    ("PUT", _CONFIG + "/healthEndpoints/{endpoint_id}", ADMINISTRATORS),
    ("DELETE", _CONFIG + "/healthEndpoints/{endpoint_id}", ADMINISTRATORS),
)
_ROLE_OF = {(method, template): role for method, template, role in ROUTE_ROLES}


def required_role(method: str, template: str) -> str | None:
    """The role the route ``method template`` needs (None = public).

    ``template`` is a route's path template as api/routes.py matched it, never a request path:
    a route missing from ROUTE_ROLES is a KeyError, and create_app checks there is none."""
    return _ROLE_OF[(method, template)]


def allows(role: str, required: str) -> bool:
    """Whether an account of ``role`` may call a route that needs ``required``; no account may
    call a members-only route (only a member signature opens it)."""
    if required == MEMBERS:
        return False
    return required == USERS or role == ADMINISTRATORS


# --------------------------------------------------------------------------- back-off


@dataclass
class _Count:
    failures: int
    last: float  # clock time of the newest failure


@dataclass(frozen=True)
class Attempt:
    """A reserved attempt: counted as a failure until ``Backoff.succeeded`` takes it back."""

    account: str | None
    source: str


class Backoff:
    """Failure counts per account, per source address, and per (account, source) pair.

    An attempt is refused while its account or its source is backing off: after ``threshold``
    failures it waits 1 s, then 2, 4, ... up to ``max_wait`` for each further one, measured from
    the newest failure. A count is forgotten ``_FAILURE_MEMORY`` seconds after its newest
    failure. A success takes back only what the same account failed from the same source (a
    user mistyping), never another account's or another source's failures.
    """

    def __init__(self, settings: SecuritySettings, clock: Callable[[], float]) -> None:
        self._account_threshold = settings.failures_before_backoff
        self._source_threshold = settings.source_failures_before_backoff
        self._max_wait = settings.max_backoff
        self._clock = clock
        self._accounts: OrderedDict[str, _Count] = OrderedDict()
        self._sources: OrderedDict[str, _Count] = OrderedDict()
        self._pairs: OrderedDict[tuple[str | None, str], _Count] = OrderedDict()

    def reserve(self, account: str | None, source: str) -> Attempt:
        """Count one attempt as failed now, before its hash is computed; TooManyRequests
        instead while its account or source must wait. Nothing awaits between the check and
        the count, so concurrent attempts are counted one by one."""
        now = self._clock()
        wait = self._source_wait(source, now)
        what = "this address"
        if account is not None and (account_wait := self._account_wait(account, now)) > wait:
            wait, what = account_wait, "this account"
        if wait > 0:
            raise TooManyRequests(
                f"Too many failed authentication attempts for {what}.", retry_after=wait
            )
        if account is not None:
            _add(self._accounts, account, 1, now)
        _add(self._sources, source, 1, now)
        _add(self._pairs, (account, source), 1, now)
        return Attempt(account, source)

    def succeeded(self, attempt: Attempt) -> None:
        pair = self._pairs.pop((attempt.account, attempt.source), None)
        taken_back = pair.failures if pair is not None else 1
        if attempt.account is not None:
            _subtract(self._accounts, attempt.account, taken_back)
        _subtract(self._sources, attempt.source, taken_back)

    def _account_wait(self, account: str, now: float) -> float:
        return self._wait(self._accounts.get(account), self._account_threshold, now)

    def _source_wait(self, source: str, now: float) -> float:
        return self._wait(self._sources.get(source), self._source_threshold, now)

    def _wait(self, count: _Count | None, threshold: int, now: float) -> float:
        if count is None or count.failures < threshold or now - count.last > _FAILURE_MEMORY:
            return 0.0
        delay = min(self._max_wait, 2.0 ** (count.failures - threshold))
        return max(0.0, count.last + delay - now)


_Key = TypeVar("_Key")


def _add(table: OrderedDict[_Key, _Count], key: _Key, failures: int, now: float) -> None:
    count = table.pop(key, None)
    if count is None or now - count.last > _FAILURE_MEMORY:
        count = _Count(0, now)
    count.failures += failures
    count.last = now
    table[key] = count  # re-inserted: most recent last, so the oldest is evicted first
    while len(table) > _TRACKED_SOURCES:
        table.popitem(last=False)


def _subtract(table: OrderedDict[_Key, _Count], key: _Key, failures: int) -> None:
    count = table.get(key)
    if count is not None:
        count.failures = max(0, count.failures - failures)


# --------------------------------------------------------------------------- client address


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as proxies write it in X-Forwarded-For: bare, ``[v6]``, or ``v4:port``."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class ClientAddress:
    """The address the back-off counts a request against.

    The TCP peer, unless the peer is a trusted proxy: then the right-most X-Forwarded-For
    entry that is not itself a trusted proxy (entries further left were written by the client
    and prove nothing). Without trusted proxies the header is ignored entirely.
    """

    def __init__(self, trusted: Iterable[str]) -> None:
        self._networks = [ipaddress.ip_network(n, strict=False) for n in trusted]
        self._peers: dict[str, bool] = {}  # peer address -> trusted; few distinct peers

    def of(self, peer: str, headers: Iterable[tuple[bytes, bytes]]) -> str:
        if not self._networks or not self._is_trusted_peer(peer):
            return peer
        forwarded = b",".join(v for k, v in headers if k == b"x-forwarded-for")
        client = peer
        for entry in reversed(forwarded.decode("latin-1").split(",")):
            address = _parse_ip(entry)
            if address is None:
                break
            client = str(address)
            if not self._trusted(address):
                break
        return client

    def _is_trusted_peer(self, peer: str) -> bool:
        known = self._peers.get(peer)
        if known is None:
            address = _parse_ip(peer)
            known = address is not None and self._trusted(address)
            if len(self._peers) >= _TRACKED_SOURCES:
                self._peers.clear()
            self._peers[peer] = known
        return known

    def _trusted(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in network for network in self._networks)


# --------------------------------------------------------------------------- authenticator


@dataclass
class _Verified:
    name: str
    password_hash: str
    expires: float


class Authenticator:
    """Decides whether one request may proceed. Reads users and clients from the replicated state."""

    def __init__(
        self,
        users: Callable[[], dict[str, engine.User]],
        settings: SecuritySettings,
        clock: Callable[[], float] = time.monotonic,
        clients: Callable[[], dict[str, engine.OAuthClient]] = dict,
    ) -> None:
        self._users = users
        self._clients = clients
        self._settings = settings
        self._clock = clock
        self._key = os.urandom(32)
        self._cache: OrderedDict[bytes, _Verified] = OrderedDict()
        self.backoff = Backoff(settings, clock)
        self.client_address = ClientAddress(settings.trusted_proxies)
        self.hashes_computed = 0  # for tests and benchmarks: checks that cost a hash
        self.on_failure: Callable[[str], None] = lambda reason: None  # metrics hook
        self.tokens: TokenService | None = None  # set by create_app; Bearer is refused without
        # A read barrier (reads.py): credentials unknown here may be replication lag, so they
        # are looked up again once this node has applied everything committed.
        self.recheck: Callable[[], Awaitable[None]] | None = None

    def enabled(self) -> bool:
        return self._settings.auth == "required"

    def source_of(
        self, peer: tuple[str, int] | None, headers: Iterable[tuple[bytes, bytes]]
    ) -> str:
        """The client address of an ASGI request (``scope["client"]``, ``scope["headers"]``)."""
        return self.client_address.of(str(peer[0]) if peer else "unknown", headers)

    async def check(
        self, method: str, template: str, authorization: bytes | None, source: str
    ) -> engine.User | Principal | None:
        """Who may call the route ``method template`` (None: nobody was authenticated, as the
        node is open or the route public); raise Unauthorized, Forbidden or TooManyRequests."""
        if not self.enabled():  # first: the open node's hot path pays one comparison
            return None
        required = required_role(method, template)
        if required is None:
            return None
        try:
            who = await self.authenticate(authorization, source)
            if not allows(who.role, required):
                raise Forbidden(f"'{who.name}' is not in the {required} role.")
        except CfsError as exc:
            self.on_failure(_failure_reason(exc, authorization))
            raise
        return who

    def check_vouched(self, method: str, template: str, caller: Caller | None) -> None:
        """The decision of ``check`` for a request another member forwarded: on the role of
        the caller that member authenticated (None = nobody), whose credentials stayed there."""
        if not self.enabled():
            return
        required = required_role(method, template)
        if required is None:
            return
        try:
            if caller is None:
                raise Unauthorized("No credentials were sent.")
            if not allows(caller.role, required):
                raise Forbidden(f"'{caller.name}' is not in the {required} role.")
        except CfsError as exc:
            self.on_failure(_failure_reason(exc, None))
            raise

    async def authenticate(
        self, authorization: bytes | None, source: str
    ) -> engine.User | Principal:
        if not self._users() and not self._clients() and self.recheck is not None:
            # A node that is behind may not have heard of any account yet. One that cannot
            # reach a leader (not yet a member, say) has none to offer: say so below.
            with contextlib.suppress(Unavailable):
                await self.recheck()
        if not self._users() and not self._clients():
            # Nothing to guess and nothing to reveal: say why no password can be right here.
            raise Unauthorized(NO_USERS_YET)
        if not authorization:
            raise Unauthorized("No credentials were sent.")
        scheme, _, token = authorization.strip().partition(b" ")
        if scheme.lower() == b"bearer":
            return await self._bearer(token.strip().decode("latin-1"))
        key = hmac.new(self._key, authorization, hashlib.sha256).digest()
        user, verified_before = self._cached(key)
        if user is not None:
            return user
        name, password = _basic(authorization)
        # A header verified before (its entry only expired) re-verifies without waiting: it
        # holds the right password, so a back-off started by someone else must not stop it.
        attempt = None if verified_before else self.backoff.reserve(_account("user", name), source)
        user = self._users().get(name) if name is not None else None
        ok = await self._verify(password, user)
        if not ok and name is not None and self.recheck is not None:
            # Created, or given a new password, through another node moments ago?
            await self.recheck()
            fresh = self._users().get(name)
            if fresh is not None and (user is None or fresh.password_hash != user.password_hash):
                user, ok = fresh, await self._verify(password, fresh)
        if user is None or not ok:
            raise Unauthorized("The user name or password is wrong.")
        if attempt is not None:
            self.backoff.succeeded(attempt)
        self._remember(key, user)
        return user

    async def _verify(self, password: str | None, user: engine.User | None) -> bool:
        """Hashed even for an unknown name (verify_known): timing does not reveal which exist."""
        self.hashes_computed += 1
        stored = user.password_hash if user is not None else None
        return await asyncio.to_thread(verify_known, password or "", stored)

    async def authenticate_client(
        self, client_id: str, secret: str, source: str
    ) -> engine.OAuthClient:
        """The token endpoint's check of a client secret. An unknown id costs the same hash as
        a known one (a dummy), so timing does not reveal which ids exist; an id this node has
        not heard of yet, or a secret changed moments ago, is checked again after a barrier."""
        attempt = self.backoff.reserve(_account("client", client_id), source)
        client = self._clients().get(client_id)
        ok = await self._verify_client(secret, client)
        if not ok and self.recheck is not None:
            await self.recheck()
            fresh = self._clients().get(client_id)
            if fresh is not None and (client is None or fresh.secret_hash != client.secret_hash):
                client, ok = fresh, await self._verify_client(secret, fresh)
        if client is None or not ok:
            raise Unauthorized("The client id or secret is wrong.")
        self.backoff.succeeded(attempt)
        return client

    async def _verify_client(self, secret: str, client: engine.OAuthClient | None) -> bool:
        self.hashes_computed += 1
        stored = client.secret_hash if client is not None else None
        return await asyncio.to_thread(verify_known, secret, stored)

    async def _bearer(self, token: str) -> Principal:
        # A refused token does not count toward the back-off: a 256-bit HMAC cannot be
        # guessed, a check costs microseconds, and an adapter whose token expired or was
        # revoked must still be let through to the token endpoint for a new one.
        if self.tokens is None:
            raise InvalidToken("This node does not accept access tokens.")
        try:
            return self.tokens.verify(token)
        except InvalidToken as exc:
            if not exc.lagging or self.recheck is None:
                raise
        await self.recheck()  # issued through a node this one has not caught up with yet
        return self.tokens.verify(token)

    # ----------------------------------------------------------------- cache

    def _cached(self, key: bytes) -> tuple[engine.User | None, bool]:
        """(the user, if a fresh entry vouches for it; whether an entry, fresh or expired,
        vouches for this exact header against the user's current password hash)."""
        entry = self._cache.get(key)
        if entry is None:
            return None, False
        user = self._users().get(entry.name)
        if user is None or not hmac.compare_digest(user.password_hash, entry.password_hash):
            del self._cache[key]  # password changed or user removed
            return None, False
        return (user if entry.expires >= self._clock() else None), True

    def _remember(self, key: bytes, user: engine.User) -> None:
        expires = self._clock() + self._settings.credential_cache_seconds
        self._cache.pop(key, None)
        self._cache[key] = _Verified(user.name, user.password_hash, expires)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)


def _account(kind: str, name: str | None) -> str | None:
    """The back-off key of an account; users and clients may share a name, not a count."""
    return None if name is None else f"{kind}:{name}"


def _basic(authorization: bytes) -> tuple[str | None, str | None]:
    """(name, password) from a Basic header; (None, None) for anything else or malformed."""
    scheme, _, token = authorization.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None, None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    name, sep, password = decoded.partition(":")
    return (name, password) if sep else (None, None)


def _failure_reason(exc: CfsError, authorization: bytes | None) -> str:
    """The ``reason`` label of ``cfs_auth_failures_total`` (a small fixed set)."""
    if isinstance(exc, Forbidden):
        return "forbidden"
    if isinstance(exc, TooManyRequests):
        return "backoff"
    return "bad_credentials" if authorization else "no_credentials"


def refusal_headers(exc: CfsError) -> list[tuple[bytes, bytes]]:
    """Extra headers for a refusal: the Basic (RFC 7617) and Bearer (RFC 6750) challenges on 401."""
    if isinstance(exc, InvalidToken):
        return [REALM_HEADER, INVALID_TOKEN_HEADER]
    return [REALM_HEADER, BEARER_HEADER] if isinstance(exc, Unauthorized) else []
