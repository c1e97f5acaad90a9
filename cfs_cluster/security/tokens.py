"""OAuth 2.0 client-credentials access tokens (issue 5 §2, spec §8.3, docs/security.md).

- A token is a compact JWT (RFC 7519) signed with HMAC-SHA256 (``HS256``, RFC 7515) under a
  signing key from the replicated state, so any node verifies what any node issued. Header:
  ``alg``, ``typ``, ``kid``; claims: ``iss``, ``sub`` (the ClientId), ``role``, ``ver`` (the
  client's secret version), ``iat``, ``exp``, ``jti``. Only this service reads its tokens, so the
  stdlib is enough; no JOSE library, no algorithm negotiation (``alg`` must be HS256).
- Verification sits on the heartbeat path. A token whose signature checked out is cached by its
  string until it expires; every request still re-checks the expiry, that the client exists with
  the same secret version, and that the key was not dropped — dict lookups, so removing a client
  or giving it a new secret refuses its tokens at once on every node.
- The role is read from the client on every request (like a user's), not trusted from the token:
  a role change applies at once. The ``role`` claim is informational.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cfs_cluster import engine
from cfs_cluster.errors import InvalidToken

__all__ = ["Principal", "TokenService", "new_signing_key"]

ALGORITHM = "HS256"
MAX_TOKEN_LENGTH = 4096  # ours are ~300 bytes; anything far longer is not worth parsing
_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class Principal:
    """Who a verified token speaks for."""

    name: str
    role: str


@dataclass(frozen=True)
class _Checked:
    """What a token's verified signature vouches for; kept until ``exp``."""

    client_id: str
    version: int
    kid: str
    exp: float


def new_signing_key() -> tuple[str, str]:
    """A fresh (kid, hex secret) pair; generated in the API layer, never inside apply."""
    return os.urandom(8).hex(), os.urandom(32).hex()


class TokenService:
    """Issues and verifies tokens against the replicated clients and signing keys."""

    def __init__(
        self,
        state: Callable[[], engine.ClusterState],
        lifetime: int,
        clock: Callable[[], float] = time.time,  # wall clock: ``exp`` is compared across nodes
    ) -> None:
        self._state = state
        self.lifetime = lifetime
        self._clock = clock
        self._cache: OrderedDict[str, _Checked] = OrderedDict()
        self.signatures_checked = 0  # for tests and benchmarks: cache misses

    def has_clients(self) -> bool:
        return bool(self._state().clients)

    def signing_key(self) -> engine.SigningKey | None:
        """The key new tokens are signed with (the newest, unretired one)."""
        keys = self._state().signing_keys
        return keys[-1] if keys and keys[-1].retired_at is None else None

    # ----------------------------------------------------------------- issue

    def issue(self, client: engine.OAuthClient, issuer: str, key: engine.SigningKey) -> str:
        now = int(self._clock())
        header = {"alg": ALGORITHM, "typ": "JWT", "kid": key.kid}
        claims = {
            "iss": issuer,
            "sub": client.client_id,
            "role": client.role,
            "ver": client.version,
            "iat": now,
            "exp": now + self.lifetime,
            "jti": os.urandom(8).hex(),
        }
        signing_input = f"{_encode_part(header)}.{_encode_part(claims)}"
        return f"{signing_input}.{_b64url(_sign(key, signing_input))}"

    # ----------------------------------------------------------------- verify

    def verify(self, token: str) -> Principal:
        """The principal ``token`` speaks for now; InvalidToken otherwise."""
        checked = self._cache.get(token)
        if checked is None:
            checked = self._check_signature(token)
            self._remember(token, checked)
        if checked.exp <= self._clock():
            self._cache.pop(token, None)
            raise InvalidToken("The access token has expired.")
        state = self._state()
        client = state.clients.get(checked.client_id)
        if client is None or client.version != checked.version:
            newer = client is None or client.version < checked.version
            raise InvalidToken("The token's client was removed or has a new secret.", lagging=newer)
        if not any(k.kid == checked.kid for k in state.signing_keys):
            raise InvalidToken("The token's signing key no longer exists.")
        return Principal(client.client_id, client.role)

    def _check_signature(self, token: str) -> _Checked:
        self.signatures_checked += 1
        parts = token.split(".") if len(token) <= MAX_TOKEN_LENGTH else []
        if len(parts) != 3:
            raise InvalidToken("The access token is malformed.")
        header, claims = _decode_part(parts[0]), _decode_part(parts[1])
        if header.get("alg") != ALGORITHM:
            raise InvalidToken("The access token is not signed with HS256.")
        key = _find_key(self._state().signing_keys, header.get("kid"))
        if key is None:
            raise InvalidToken("The token's signing key is unknown.", lagging=True)
        try:
            signature = _unb64url(parts[2])
        except ValueError:
            raise InvalidToken("The access token is malformed.") from None
        if not hmac.compare_digest(_sign(key, f"{parts[0]}.{parts[1]}"), signature):
            raise InvalidToken("The access token's signature is wrong.")
        sub, ver, exp = claims.get("sub"), claims.get("ver"), claims.get("exp")
        if not isinstance(sub, str) or type(ver) is not int or type(exp) is not int:
            raise InvalidToken("The access token lacks sub, ver or exp.")
        return _Checked(sub, ver, key.kid, float(exp))

    def _remember(self, token: str, checked: _Checked) -> None:
        self._cache[token] = checked
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)


def _find_key(keys: list[engine.SigningKey], kid: object) -> engine.SigningKey | None:
    return next((k for k in keys if k.kid == kid), None) if isinstance(kid, str) else None


def _sign(key: engine.SigningKey, signing_input: str) -> bytes:
    return hmac.new(bytes.fromhex(key.secret), signing_input.encode(), hashlib.sha256).digest()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


def _encode_part(value: dict[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


def _decode_part(text: str) -> dict[str, Any]:
    try:
        value = json.loads(_unb64url(text))
    except (ValueError, RecursionError):  # binascii/Unicode/JSON errors are all ValueErrors
        raise InvalidToken("The access token is malformed.") from None
    if not isinstance(value, dict):
        raise InvalidToken("The access token is malformed.")
    return value
