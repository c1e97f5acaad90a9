"""Authentication and authorization of API requests (spec §8.1, docs/security.md).

- HTTP Basic against the replicated user store; two roles, ``users`` (adapters) and
  ``administrators``. ``ROUTE_ROLES`` is the one table of who may call which route.
- Passwords are stored as scrypt hashes. Hashing happens on the receiving node *before* a
  command is replicated (apply must stay deterministic and cheap), and verification runs in a
  worker thread so a 50 ms hash never stalls the event loop.
- Verified credentials are cached, keyed by an HMAC of the Authorization header under a
  per-process key, and tied to the password hash they were checked against: a password change
  or removal invalidates them at once, with no explicit cache flush across nodes.
- Repeated wrong credentials from one source IP make it wait (429 + Retry-After) with an
  exponentially growing delay, before any hash is computed.
- ``Authorization: Bearer`` carries an OAuth access token (tokens.py) and is accepted wherever
  Basic is; a token check is a cached dict lookup, no hash.
- Auth is opt-in for now: enforced when the cluster has at least one user or OAuth client, or
  always with ``--auth required``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from . import engine
from .errors import BadRequest, CfsError, TooManyRequests
from .forwarding import RELAY_PATH
from .settings import SecuritySettings
from .tokens import InvalidToken, Principal, TokenService

__all__ = [
    "ADMINISTRATORS",
    "ROUTE_ROLES",
    "USERS",
    "Authenticator",
    "Forbidden",
    "Unauthorized",
    "check_user_name",
    "hash_password",
    "parse_role",
    "required_role",
    "verify_known",
    "verify_password",
]

USERS = "users"
ADMINISTRATORS = engine.ADMINISTRATORS
ROLES = (USERS, ADMINISTRATORS)
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
_TRACKED_SOURCES = 10_000
_FAILURE_MEMORY = 600.0  # seconds after the last failure that a source's count is forgotten

# scrypt cost: ~16 MiB and tens of milliseconds per hash; stored with the hash so it can grow.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 1 << 14, 8, 1


class Unauthorized(CfsError):
    """Missing or wrong credentials."""

    status = 401
    default_error = "Authentication is required."
    default_resolution = "Send HTTP Basic credentials of a user of this service."


class Forbidden(CfsError):
    """Valid credentials of a user without the required role."""

    status = 403
    default_error = "The user is not allowed to perform this operation."
    default_resolution = "Use an account of the administrators role."


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
    ("POST", RELAY_PATH, _ANYONE),  # checks the relay's own token
    ("GET", "/openapi.json", USERS),
    ("HEAD", "/openapi.json", USERS),
    ("GET", "/docs", USERS),
    ("HEAD", "/docs", USERS),
    ("GET", "/docs/oauth2-redirect", USERS),
    ("HEAD", "/docs/oauth2-redirect", USERS),
    ("GET", "/redoc", USERS),
    ("HEAD", "/redoc", USERS),
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
    ("DELETE", _SESSION, USERS),
    ("POST", _SESSION + "/heartbeat", USERS),
    ("GET", _SESSION + "/role", USERS),
    ("POST", _SESSION + "/roleoverride", ADMINISTRATORS),
    ("GET", "/api/v1/cluster", USERS),
    ("GET", "/api/v1/cluster/backup", ADMINISTRATORS),  # secrets' hashes and signing keys
    ("POST", "/api/v1/cluster/members", ADMINISTRATORS),
    ("DELETE", "/api/v1/cluster/members/{member}", ADMINISTRATORS),
    ("POST", "/api/v1/cluster/transfer-leader", ADMINISTRATORS),
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
    return required == USERS or role == ADMINISTRATORS


# --------------------------------------------------------------------------- authenticator


@dataclass
class _Verified:
    name: str
    password_hash: str
    expires: float


@dataclass
class _Failures:
    count: int
    last: float
    blocked_until: float


class Authenticator:
    """Decides whether one request may proceed. Reads users from the replicated state."""

    def __init__(
        self,
        users: Callable[[], dict[str, engine.User]],
        settings: SecuritySettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._users = users
        self._settings = settings
        self._clock = clock
        self._key = os.urandom(32)
        self._cache: OrderedDict[bytes, _Verified] = OrderedDict()
        self._failures: OrderedDict[str, _Failures] = OrderedDict()
        self.hashes_computed = 0  # for tests and benchmarks: cache misses that cost a hash
        self.on_failure: Callable[[str], None] = lambda reason: None  # metrics hook
        self.tokens: TokenService | None = None  # set by create_app; Bearer is refused without

    def enabled(self) -> bool:
        return (
            self._settings.auth == "required"
            or bool(self._users())
            or (self.tokens is not None and self.tokens.has_clients())
        )

    async def check(
        self, method: str, template: str, authorization: bytes | None, source: str
    ) -> None:
        """Return when a request for the route ``method template`` may proceed; raise
        Unauthorized, Forbidden or TooManyRequests."""
        if not self.enabled():  # first: the open cluster's hot path pays one dict check
            return
        required = required_role(method, template)
        if required is None:
            return
        try:
            who = await self.authenticate(authorization, source)
            if not allows(who.role, required):
                raise Forbidden(f"'{who.name}' is not in the {required} role.")
        except CfsError as exc:
            self.on_failure(_failure_reason(exc, authorization))
            raise

    async def authenticate(
        self, authorization: bytes | None, source: str
    ) -> engine.User | Principal:
        self.check_backoff(source)
        if not authorization:
            raise Unauthorized("No credentials were sent.")
        scheme, _, token = authorization.strip().partition(b" ")
        if scheme.lower() == b"bearer":
            return self._bearer(token.strip().decode("latin-1"))
        key = hmac.new(self._key, authorization, hashlib.sha256).digest()
        user = self._cached(key)
        if user is not None:
            return user
        name, password = _basic(authorization)
        user = self._users().get(name) if name is not None else None
        self.hashes_computed += 1
        stored = user.password_hash if user is not None else _DUMMY_HASH
        ok = await asyncio.to_thread(verify_password, password or "", stored)
        if user is None or not ok:
            self.record_failure(source)
            raise Unauthorized("The user name or password is wrong.")
        self.record_success(source)
        self._remember(key, user)
        return user

    def _bearer(self, token: str) -> Principal:
        # A refused token does not count toward the back-off: a 256-bit HMAC cannot be
        # guessed, a check costs microseconds, and an adapter whose token expired or was
        # revoked must still be let through to the token endpoint for a new one.
        if self.tokens is None:
            raise InvalidToken("This node does not accept access tokens.")
        return self.tokens.verify(token)

    # ----------------------------------------------------------------- cache

    def _cached(self, key: bytes) -> engine.User | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        user = self._users().get(entry.name)
        if (
            user is None
            or entry.expires < self._clock()
            or not hmac.compare_digest(user.password_hash, entry.password_hash)
        ):
            del self._cache[key]  # password changed, user removed, or entry too old
            return None
        return user

    def _remember(self, key: bytes, user: engine.User) -> None:
        expires = self._clock() + self._settings.credential_cache_seconds
        self._cache[key] = _Verified(user.name, user.password_hash, expires)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)

    # ----------------------------------------------------------------- back-off

    def check_backoff(self, source: str) -> None:
        """Raise TooManyRequests while ``source`` must wait (also used by the token endpoint)."""
        record = self._failures.get(source)
        now = self._clock()
        if record is not None and record.blocked_until > now:
            raise TooManyRequests(
                "Too many failed authentication attempts from this address.",
                retry_after=record.blocked_until - now,
            )

    def record_success(self, source: str) -> None:
        self._failures.pop(source, None)

    def record_failure(self, source: str) -> None:
        now = self._clock()
        record = self._failures.pop(source, None)
        if record is None or now - record.last > _FAILURE_MEMORY:
            record = _Failures(0, now, 0.0)
        record.count += 1
        record.last = now
        excess = record.count - self._settings.failures_before_backoff
        if excess >= 0:
            record.blocked_until = now + min(self._settings.max_backoff, 2.0**excess)
        self._failures[source] = record  # re-inserted: most recent last
        while len(self._failures) > _TRACKED_SOURCES:
            self._failures.popitem(last=False)


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
