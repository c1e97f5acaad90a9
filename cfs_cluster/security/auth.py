"""Authentication and authorization of API requests (spec §8.1, docs/security.md).

- HTTP Basic against the replicated user store; two roles, ``users`` (adapters) and
  ``administrators``. ``roles.ROUTE_ROLES`` is the one table of who may call which route.
- Passwords are stored as scrypt hashes (passwords.py). Hashing happens on the receiving node *before* a
  command is replicated (apply must stay deterministic and cheap), and verification runs in a
  worker thread so a 50 ms hash never stalls the event loop.
- Verified credentials are cached, keyed by an HMAC of the Authorization header under a
  per-process key, and tied to the password hash they were checked against: a password change
  or removal invalidates them at once, with no explicit cache flush across nodes.
- Back-off (``backoff.Backoff``): wrong credentials are counted per account and per source address;
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
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from cfs_cluster import engine
from cfs_cluster.errors import (
    CfsError,
    Forbidden,
    InvalidToken,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from cfs_cluster.security.backoff import Backoff, ClientAddress
from cfs_cluster.security.memberauth import Caller
from cfs_cluster.security.passwords import verify_known
from cfs_cluster.security.roles import allows, required_role
from cfs_cluster.security.tokens import Principal, TokenService
from cfs_cluster.settings import SecuritySettings

__all__ = ["NOT_NOW", "NO_USERS_YET", "Authenticator", "NotNow", "refusal_headers"]

REALM_HEADER = (b"www-authenticate", b'Basic realm="cfs", charset="UTF-8"')
BEARER_HEADER = (b"www-authenticate", b'Bearer realm="cfs"')
INVALID_TOKEN_HEADER = (b"www-authenticate", b'Bearer realm="cfs", error="invalid_token"')
_CACHE_SIZE = 10_000
NO_USERS_YET = (
    "This node has no users yet: it has not joined the cluster (cfs cluster add-node) "
    "or no administrator was created (CFS_BOOTSTRAP_ADMIN)."
)


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
        self._verifying: dict[bytes, asyncio.Future[engine.User]] = {}  # by header key
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

    def check_now(
        self, method: str, template: str, authorization: bytes | None
    ) -> engine.User | Principal | None | NotNow:
        """``check`` without awaiting, when its answer is a success that needs nothing
        asynchronous: an open node, a public route, a Basic header verified and cached, a
        Bearer token that verifies. Anything else (no credentials, a first or a wrong password,
        a lagging token, a missing role) is ``NOT_NOW``: the caller awaits ``check``, which
        decides it and counts the failure, so both always reach the same decision."""
        if not self.enabled():
            return None
        required = required_role(method, template)
        if required is None:
            return None
        if not authorization or (not self._users() and not self._clients()):
            return NOT_NOW
        scheme, _, token = authorization.strip().partition(b" ")
        who: engine.User | Principal | None
        if scheme.lower() == b"bearer":
            who = self._bearer_now(token.strip().decode("latin-1"))
        else:
            who, _ = self._cached(hmac.new(self._key, authorization, hashlib.sha256).digest())
        if who is None or not allows(who.role, required):
            return NOT_NOW
        return who

    def _bearer_now(self, token: str) -> Principal | None:
        if self.tokens is None:
            return None
        try:
            return self.tokens.verify(token)
        except InvalidToken:
            return None

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
        # Adapters sharing an account send the same header, and after a restart all at once:
        # one verification answers every concurrent check of it. Checked one by one, each
        # would reserve an attempt (a failure until it succeeds) and valid adapters past the
        # threshold would be answered 429.
        pending = self._verifying.get(key)
        if pending is None:
            pending = asyncio.ensure_future(
                self._verify_basic(authorization, key, source, verified_before)
            )
            self._verifying[key] = pending
            pending.add_done_callback(lambda done: self._settled(key, done))
        return await asyncio.shield(pending)

    def _settled(self, key: bytes, done: asyncio.Future[engine.User]) -> None:
        if self._verifying.get(key) is done:
            del self._verifying[key]
        if not done.cancelled():
            done.exception()  # retrieved here too: every waiter may have gone

    async def _verify_basic(
        self, authorization: bytes, key: bytes, source: str, verified_before: bool
    ) -> engine.User:
        name, password = _basic(authorization)
        # A header verified before (its entry only expired) re-verifies without waiting: it
        # holds the right password, so a back-off started by someone else must not stop it.
        attempt = None if verified_before else self.backoff.reserve(_account("user", name), source)
        user = self._users().get(name) if name is not None else None
        # The hash as checked: apply changes a record in place, so compare against a copy.
        checked = user.password_hash if user is not None else None
        ok = await self._verify(password, user)
        if not ok and name is not None and self.recheck is not None:
            # Created, or given a new password, through another node moments ago?
            try:
                await self.recheck()
            except Exception as exc:  # the barrier failed: timeout, no leader, no member key
                if user is None and attempt is not None:
                    # This node has not heard of the account and cannot ask a leader now (it
                    # restarted behind its peers, say): nothing was checked, so nothing
                    # counts, or adapters with valid credentials would be backed off (429).
                    self.backoff.withdraw(attempt)
                if isinstance(exc, Unavailable):
                    raise
                raise _cannot_check_now() from exc
            fresh = self._users().get(name)
            if fresh is not None and fresh.password_hash != checked:
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
        checked = client.secret_hash if client is not None else None  # apply edits in place
        ok = await self._verify_client(secret, client)
        if not ok and self.recheck is not None:
            try:
                await self.recheck()
            except Exception as exc:
                if client is None:  # unknown here and no leader to ask: nothing was checked
                    self.backoff.withdraw(attempt)
                if isinstance(exc, Unavailable):
                    raise
                raise _cannot_check_now() from exc
            fresh = self._clients().get(client_id)
            if fresh is not None and fresh.secret_hash != checked:
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


class NotNow:
    """``check_now``'s "await ``check`` for this one"."""

    __slots__ = ()


NOT_NOW = NotNow()


def _cannot_check_now() -> Unavailable:
    """A 503 the adapter retries: the credentials may be right, this node could not tell."""
    return Unavailable(
        "This node cannot check these credentials now (it is catching up with the cluster).",
        retry_after=1,
    )


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
