"""The one set of field rules: ids, text, URLs, credential pairs and masked secrets.

Shared by the engine's global configuration (``/api/v1/configuration``) and the embeddable
facet (ClientFailover, HealthEndpoints), so an endpoint, a credential or a mask is judged the
same way on either side. Pure: values in, values out or a ``BadRequest`` naming the field; it
imports only the error tree and the standard library, so the agent and the facet can use it
without loading the engine.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from cfs_cluster.errors import BadRequest

__all__ = [
    "ENDPOINT_FIELDS",
    "ENDPOINT_SCHEMA_PROPERTIES",
    "MASK",
    "MAX_ID_LENGTH",
    "MAX_TEXT_LENGTH",
    "Credentialed",
    "HealthEndpointSettings",
    "bounded",
    "credentials",
    "flag",
    "identifier",
    "identifier_or",
    "mask_error",
    "text",
    "unmask_secrets",
    "url",
]

MASK = "********"
MAX_ID_LENGTH = 256
MAX_TEXT_LENGTH = 2048
# An OMF endpoint's properties (spec §6.2), canonical PascalCase, in the order GET writes them.
ENDPOINT_FIELDS = (
    "Endpoint",
    "UserName",
    "Password",
    "ClientId",
    "ClientSecret",
    "TokenEndpoint",
    "ValidateEndpointCertificate",
)
# Their OpenAPI schema, shared by every route that takes an endpoint.
ENDPOINT_SCHEMA_PROPERTIES: dict[str, Any] = {
    "Endpoint": {"type": "string", "format": "uri"},
    "UserName": {"type": "string"},
    "Password": {"type": "string"},
    "ClientId": {"type": "string"},
    "ClientSecret": {"type": "string"},
    "TokenEndpoint": {"type": "string", "format": "uri"},
    "ValidateEndpointCertificate": {"type": "boolean", "default": True},
}


@dataclass(frozen=True)
class HealthEndpointSettings:
    """One OMF health endpoint (the adapter framework's HealthEndpoints facet, spec §6.2)."""

    id: str
    endpoint: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    token_endpoint: str | None = None
    validate_certificate: bool = True


# --------------------------------------------------------------------------- ids and text


def identifier_or(value: Any, default_id: str | None) -> str:
    """An ``Id``; a missing one becomes ``default_id`` or a new GUID."""
    if value is None or value == "":
        return default_id or str(uuid.uuid4())
    return identifier(value, "Id")


def identifier(value: Any, name: str) -> str:
    """Ids travel in URLs (ours and the failover endpoint's): printable, no '/', bounded."""
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string.", parameters={name: repr(value)[:64]})
    if len(value) > MAX_ID_LENGTH:
        raise BadRequest(
            f"{name} is longer than {MAX_ID_LENGTH} characters.", parameters={name: value[:64]}
        )
    if not value.strip() or not value.isprintable() or "/" in value:
        raise BadRequest(
            f"{name} must be printable characters, not only spaces, and contain no '/'.",
            parameters={name: value[:64]},
        )
    return value


def text(value: Any, name: str) -> str | None:
    """Credentials: an empty string means not given."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string.", parameters={name: type(value).__name__})
    return bounded(value, name)


def bounded(value: str, name: str) -> str:
    if len(value) > MAX_TEXT_LENGTH:
        raise BadRequest(
            f"{name} is longer than {MAX_TEXT_LENGTH} characters.", parameters={name: value[:64]}
        )
    return value


def flag(value: Any, name: str) -> bool:
    """A boolean that defaults to true (ValidateEndpointCertificate)."""
    if value is None:
        return True
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false.", parameters={name: repr(value)[:32]})
    return value


# --------------------------------------------------------------------------- credentials


def credentials(v: Mapping[str, Any]) -> dict[str, str | None]:
    """Exactly one pair (Basic or client credentials) or none (spec §5.1 auth selection)."""
    pairs = {
        "username": text(v.get("UserName"), "UserName"),
        "password": text(v.get("Password"), "Password"),
        "client_id": text(v.get("ClientId"), "ClientId"),
        "client_secret": text(v.get("ClientSecret"), "ClientSecret"),
    }
    _pair(pairs["username"], pairs["password"], "UserName", "Password")
    _pair(pairs["client_id"], pairs["client_secret"], "ClientId", "ClientSecret")
    if pairs["username"] is not None and pairs["client_id"] is not None:
        raise BadRequest(
            "Give UserName/Password (on-premises failover service) or ClientId/ClientSecret "
            "(CONNECT data services), not both.",
            parameters={"UserName": "set", "ClientId": "set"},
        )
    return pairs


def _pair(first: str | None, second: str | None, a: str, b: str) -> None:
    if (first is None) != (second is None):
        missing = b if second is None else a
        raise BadRequest(
            f"{a} and {b} go together: {missing} is missing.", parameters={missing: ""}
        )


class Credentialed(Protocol):
    """Anything that carries one credential pair or the other (configs, endpoints)."""

    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> str | None: ...
    @property
    def client_id(self) -> str | None: ...
    @property
    def client_secret(self) -> str | None: ...


_C = TypeVar("_C", bound=Credentialed)


def unmask_secrets(value: _C, stored: _C | None) -> _C:
    """A secret sent back as the mask (GET, edit, PUT) keeps the stored secret.

    Only the same credential kind keeps its secret: a mask under a changed UserName or ClientId
    would silently pair an old password with a new account. ``value`` must be a dataclass.
    """
    password, secret = value.password, value.client_secret
    if password == MASK:
        if stored is None or stored.password is None or stored.username != value.username:
            raise mask_error("Password")
        password = stored.password
    if secret == MASK:
        if stored is None or stored.client_secret is None or stored.client_id != value.client_id:
            raise mask_error("ClientSecret")
        secret = stored.client_secret
    return replace(value, password=password, client_secret=secret)  # type: ignore[type-var]


def mask_error(name: str) -> BadRequest:
    return BadRequest(
        f"{name} is the mask '{MASK}' but there is no stored {name} for this account to keep.",
        resolution=f"Send the real {name}.",
        parameters={name: MASK},
    )


# --------------------------------------------------------------------------- URLs


def url(value: Any, name: str, *, required: bool) -> str | None:
    """An absolute http(s) URL without credentials, spaces or control characters."""
    if value is None or value == "":
        if required:
            raise BadRequest(
                f"{name} is required: the failover endpoint, such as "
                "https://cfs-host:5590/api/v1/clientfailover.",
                parameters={name: ""},
            )
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT_LENGTH:
        raise BadRequest(f"{name} must be an http(s) URL string.", parameters={name: "invalid"})
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise BadRequest(
            f"{name} is not a valid URL: {exc}.", parameters={name: value[:64]}
        ) from exc
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise BadRequest(
            f"{name} '{value[:64]}' is not a well-formed http:// or https:// URL.",
            parameters={name: value[:64]},
        )
    if parts.username is not None or parts.password is not None:
        # Credentials in a URL would end up in logs; they belong in UserName/Password.
        raise BadRequest(
            f"{name} must not contain credentials; use UserName and Password.",
            parameters={name: "contains credentials"},
        )
    if any(c.isspace() or not c.isprintable() for c in value):
        raise BadRequest(
            f"{name} must not contain spaces or control characters.", parameters={name: value[:64]}
        )
    return value
