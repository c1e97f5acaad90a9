"""Passwords and the account fields an administrator sends: scrypt hashes, names, roles.

Hashing happens on the receiving node *before* a command is replicated (apply must stay
deterministic and cheap); verification is constant-time, and an unknown account is checked
against a dummy hash at the same cost, so timing reveals no names.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

from cfs_cluster.engine import ADMINISTRATORS, USERS
from cfs_cluster.errors import BadRequest

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_PASSWORD_LENGTH",
    "check_password",
    "check_user_name",
    "hash_password",
    "parse_role",
    "verify_known",
    "verify_password",
]

MAX_PASSWORD_LENGTH = 1024
MAX_NAME_LENGTH = 64
_ROLE_ALIASES = {
    "users": USERS,
    "user": USERS,
    "avevafailoverusers": USERS,
    "administrators": ADMINISTRATORS,
    "administrator": ADMINISTRATORS,
    "admin": ADMINISTRATORS,
    "avevafailoveradministrators": ADMINISTRATORS,
}

# scrypt cost: ~16 MiB and tens of milliseconds per hash; stored with the hash so it can grow.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 1 << 14, 8, 1


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
