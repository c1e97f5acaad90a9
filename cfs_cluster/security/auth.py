"""Authentication and authorization of API requests (spec §8.1, docs/security.md).

- HTTP Basic against the replicated user store; two roles, ``users`` (adapters) and
  ``administrators``. ``required_role(method, path)`` is the one table of who may call what.
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
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cfs_cluster import engine
from cfs_cluster.errors import BadRequest, CfsError, TooManyRequests
from cfs_cluster.protocol.heartbeat import READ_PATH, RELAY_PATH
from cfs_cluster.security.tokens import InvalidToken, Principal, TokenService
from cfs_cluster.settings import SecuritySettings

__all__ = [
    "ADMINISTRATORS",
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
NO_USERS_YET = (
    "This node has no users yet: it has not joined the cluster (cfs cluster add-node) "
    "or no administrator was created (CFS_BOOTSTRAP_ADMIN)."
)

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

_PUBLIC = {"/healthz", "/readyz", RELAY_PATH, READ_PATH}  # the internal routes check a token
# The dashboard's files hold no data (its data comes from the API with the user's credentials),
# and its login form must load before anyone has logged in; its "who am I" checks the
# credentials it is given itself (api/dashboard.py).
_PUBLIC_UI = {"/", "/ui", "/api/v1/dashboard/me"}
_GROUP = re.compile(r"^/api/v1/clientfailover/groups/[^/]+$")
_ADMIN_PREFIXES = (
    "/api/v1/users",
    "/api/v1/clients",
    "/api/v1/identity",
    "/api/v1/configuration",
    "/api/v1/cluster/backup",
)


def required_role(method: str, path: str) -> str | None:
    """The role ``method path`` needs (None = public). Paths match case-insensitively."""
    p = path.lower().rstrip("/") or "/"
    if p in _PUBLIC or p in _PUBLIC_UI or p.startswith(("/identity/", "/ui/")):
        return None
    if p.startswith(_ADMIN_PREFIXES):
        return ADMINISTRATORS
    if p.startswith("/api/v1/cluster") and method not in ("GET", "HEAD"):
        return ADMINISTRATORS  # membership changes
    if method == "DELETE" and _GROUP.match(p):
        return ADMINISTRATORS
    if method == "POST" and p.endswith("/roleoverride"):
        return ADMINISTRATORS
    return USERS


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
        # A read barrier (reads.py): credentials unknown here may be replication lag, so they
        # are looked up again once this node has applied everything committed.
        self.recheck: Callable[[], Awaitable[None]] | None = None

    def enabled(self) -> bool:
        return (
            self._settings.auth == "required"
            or bool(self._users())
            or (self.tokens is not None and self.tokens.has_clients())
        )

    async def check(self, method: str, path: str, authorization: bytes | None, source: str) -> None:
        """Return when the request may proceed; raise Unauthorized, Forbidden or TooManyRequests."""
        if not self.enabled():  # first: the open cluster's hot path pays one dict check
            return
        required = required_role(method, path)
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
            return await self._bearer(token.strip().decode("latin-1"))
        key = hmac.new(self._key, authorization, hashlib.sha256).digest()
        user = self._cached(key)
        if user is not None:
            return user
        name, password = _basic(authorization)
        if not self._users() and self.recheck is not None:
            await self.recheck()  # a node that is behind may not have heard of any user yet
        users = self._users()
        if not users:
            # Nothing to guess and nothing to reveal: say why no password can be right here.
            self.record_failure(source)
            raise Unauthorized(NO_USERS_YET)
        user = users.get(name) if name is not None else None
        ok = await self._verify(password, user)
        if not ok and name is not None and self.recheck is not None:
            # Created, or given a new password, through another node moments ago?
            await self.recheck()
            fresh = self._users().get(name)
            if fresh is not None and (user is None or fresh.password_hash != user.password_hash):
                user, ok = fresh, await self._verify(password, fresh)
        if user is None or not ok:
            self.record_failure(source)
            raise Unauthorized("The user name or password is wrong.")
        self.record_success(source)
        self._remember(key, user)
        return user

    async def _verify(self, password: str | None, user: engine.User | None) -> bool:
        self.hashes_computed += 1
        stored = user.password_hash if user is not None else _DUMMY_HASH
        ok = await asyncio.to_thread(verify_password, password or "", stored)
        return ok and user is not None

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
