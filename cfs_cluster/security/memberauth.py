"""The members' internal channel: every request one member sends another is signed.

Followers relay heartbeats to the leader, forward administrator requests to it, and ask it for
reads; all of it travels over the API port, as plain HTTP unless TLS is on. So no request
carries a reusable secret. Each one carries ``X-CFS-Member``::

    v1.<kid>.<timestamp ms>.<nonce>.<audience>.<caller>.<HMAC-SHA256>

The HMAC covers the key id, timestamp, nonce, audience (the node id of the member it is meant
for), caller, method, path and query, and the SHA-256 of the body, under a 256-bit key from the
replicated state (``ClusterState.member_keys``: the leader issues the first one, administrators
rotate it; Raft traffic itself is encrypted with the cluster secret). The receiver refuses
(401) a request whose signature does not verify, whose key is unknown or retired more than
``OVERLAP`` seconds ago, whose timestamp is more than ``SKEW`` seconds from its own clock, that
is meant for another member, or whose nonce it has seen: a request overheard on the wire can
be replayed neither to this node nor to another one, and tells nothing about the key.

``caller`` is who a forwarded administrator request speaks for (name and role, as the follower
authenticated them): the end user's own credentials never leave the node they were sent to.
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

from cfs_cluster.engine import SigningKey
from cfs_cluster.errors import MEMBER_CLOCK_SKEW, MemberAuthFailed, Unavailable

__all__ = [
    "INTERNAL_PREFIX",
    "MEMBER_HEADER",
    "OVERLAP",
    "SKEW",
    "Caller",
    "MemberAuth",
    "MemberRequest",
    "is_internal",
    "new_member_key",
]

MEMBER_HEADER = "x-cfs-member"
INTERNAL_PREFIX = "/_cluster/"  # every route under it answers members only
VERSION = "v1"
SKEW = MEMBER_CLOCK_SKEW  # seconds a member's clock may differ from ours
OVERLAP = 60  # seconds a retired key keeps verifying: members apply a rotation at their pace
MAX_NONCES = 100_000  # nonces remembered; beyond, the oldest go and their timestamps with them
MAX_HEADER = 1024  # ours are ~200 characters; a caller name is at most 64
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True)
class Caller:
    """An authenticated user or OAuth client, as the node that authenticated it vouches."""

    name: str
    role: str


@dataclass(frozen=True)
class MemberRequest:
    """What a verified signature vouches for."""

    kid: str
    caller: Caller | None


def new_member_key() -> tuple[str, str]:
    """A fresh (kid, hex secret) pair; generated outside the state machine."""
    return os.urandom(8).hex(), os.urandom(32).hex()


def is_internal(path: str) -> bool:
    """Whether ``path`` is under the internal prefix, in any ASCII casing."""
    return path[: len(INTERNAL_PREFIX)].translate(_ASCII_LOWER) == INTERNAL_PREFIX


class MemberAuth:
    """Signs this node's requests to other members and verifies theirs."""

    def __init__(
        self,
        keys: Callable[[], list[SigningKey]],
        node_id: str,
        clock: Callable[[], float] = time.time,  # wall clock: timestamps cross machines
    ) -> None:
        self._keys = keys
        self._node_id = node_id
        self._clock = clock
        self._nonces: OrderedDict[str, float] = OrderedDict()  # nonce -> its timestamp
        # Timestamps at or before this are refused: the nonces of some of them were forgotten.
        self._floor = 0.0

    def has_key(self) -> bool:
        return bool(self._keys())

    def current_kid(self) -> str | None:
        keys = self._keys()
        return keys[-1].kid if keys else None

    # ----------------------------------------------------------------- signing

    def sign(
        self, method: str, target: str, body: bytes, audience: str, caller: Caller | None = None
    ) -> str:
        """The ``X-CFS-Member`` value for one request to the member ``audience``."""
        keys = self._keys()
        if not keys:
            raise Unavailable(
                "This node has no member key yet (the leader issues it once it leads).",
                retry_after=0.5,
            )
        key = keys[-1]
        fields = (
            key.kid,
            str(int(self._clock() * 1000)),
            os.urandom(16).hex(),
            _b64(audience.encode()),
            "" if caller is None else _b64(json.dumps([caller.name, caller.role]).encode()),
        )
        return ".".join((VERSION, *fields, _mac(key.secret, fields, method, target, body)))

    # ----------------------------------------------------------------- verifying

    def verify(self, method: str, target: str, body: bytes, header: bytes | None) -> MemberRequest:
        """Raise MemberAuthFailed unless ``header`` signs exactly this request, for this node,
        now, for the first time."""
        fields, signature = _parse(header)
        kid, stamp, nonce, audience, caller = fields
        key = self._verifying_key(kid)
        expected = _mac(key.secret, fields, method, target, body)
        if not hmac.compare_digest(expected, signature):
            raise MemberAuthFailed("The member signature does not match the request.")
        if _unb64(audience) != self._node_id.encode():
            raise MemberAuthFailed("The request was signed for another member.")
        self._check_fresh(int(stamp) / 1000, nonce)
        return MemberRequest(kid, _caller(caller))

    def _verifying_key(self, kid: str) -> SigningKey:
        now = self._clock()
        for key in self._keys():
            if key.kid == kid and (key.retired_at is None or now - key.retired_at <= OVERLAP):
                return key
        raise MemberAuthFailed("The request is signed with an unknown or retired member key.")

    def _check_fresh(self, stamp: float, nonce: str) -> None:
        now = self._clock()
        if abs(now - stamp) > SKEW:
            raise MemberAuthFailed(
                f"The member signature is {now - stamp:+.0f} s old; at most {SKEW:g} s are "
                "accepted (check the members' clocks)."
            )
        if stamp <= self._floor or nonce in self._nonces:
            raise MemberAuthFailed("The member request was already received (a replay).")
        self._forget_expired(now)
        self._nonces[nonce] = stamp
        while len(self._nonces) > MAX_NONCES:
            _, forgotten = self._nonces.popitem(last=False)
            self._floor = max(self._floor, forgotten)

    def _forget_expired(self, now: float) -> None:
        """Drop nonces whose timestamps are out of the window anyway (mostly the oldest)."""
        while self._nonces:
            nonce, stamp = next(iter(self._nonces.items()))
            if now - stamp <= SKEW:
                return
            del self._nonces[nonce]


def _mac(secret: str, fields: tuple[str, ...], method: str, target: str, body: bytes) -> str:
    # Every field but ``target`` is free of newlines and the digest has a fixed length, so the
    # joined message has exactly one reading.
    message = "\n".join((VERSION, *fields, method.upper(), target)).encode()
    message += b"\n" + hashlib.sha256(body).hexdigest().encode()
    return hmac.new(bytes.fromhex(secret), message, hashlib.sha256).hexdigest()


def _parse(header: bytes | None) -> tuple[tuple[str, str, str, str, str], str]:
    if not header:
        raise MemberAuthFailed("The request carries no member signature.")
    if len(header) > MAX_HEADER:
        raise MemberAuthFailed("The member signature header is too long.")
    try:
        text = header.decode("ascii")
    except UnicodeDecodeError:
        raise MemberAuthFailed("The member signature header is not ASCII.") from None
    parts = text.strip().split(".")
    if len(parts) != 7 or parts[0] != VERSION:
        raise MemberAuthFailed(f"The member signature header is not of the form {VERSION}.….")
    _, kid, stamp, nonce, audience, caller, signature = parts
    if not (stamp.isdigit() and len(stamp) <= 15 and _hex(nonce) and _hex(signature)):
        raise MemberAuthFailed("The member signature header is malformed.")
    return (kid, stamp, nonce, audience, caller), signature


def _caller(field: str) -> Caller | None:
    """The caller a verified signature vouches for (its encoding was signed, so malformed
    here means a member bug, still answered 401, never 500)."""
    if not field:
        return None
    try:
        name, role = json.loads(_unb64(field))
    except (ValueError, TypeError):
        raise MemberAuthFailed("The forwarded caller is malformed.") from None
    if not isinstance(name, str) or not isinstance(role, str):
        raise MemberAuthFailed("The forwarded caller is malformed.")
    return Caller(name, role)


def _hex(text: str) -> bool:
    return 0 < len(text) <= 128 and all(c in "0123456789abcdef" for c in text)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise MemberAuthFailed("The member signature header is malformed.") from None
