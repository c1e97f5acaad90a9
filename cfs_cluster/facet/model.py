"""The ClientFailover configuration facet as a pure value (seed 002; spec §5.1).

Everything here is pure: a parsed JSON body goes in, a frozen ``ClientFailoverConfig`` comes out
or a ``BadRequest`` naming the field is raised. No file, network or clock is touched, so the
router, the store and the tests share one set of rules.

Input follows the adapter framework: property names in any casing, ``Mode`` in any casing (the
seed's own example says ``"hot"``), ``FailoverTimeout`` as ``hh:mm:ss`` or a number of seconds.
Unlike .NET, unknown properties are refused: a misspelt ``FailoverTimout`` silently falling back
to the default is exactly the mistake a configuration API should catch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cfs_cluster.errors import BadRequest
from cfs_cluster.protocol.validators import (
    ENDPOINT_FIELDS,
    MASK,
    bounded,
    credentials,
    flag,
    identifier,
    identifier_or,
    unmask_secrets,
    url,
)
from cfs_cluster.protocol.wire import TICKS_PER_SECOND, parse_timespan

__all__ = [
    "DEFAULT_TIMEOUT",
    "FIELDS",
    "MASK",
    "MAX_TIMEOUT",
    "MIN_TIMEOUT",
    "MODES",
    "ClientFailoverConfig",
    "credentials",
    "flag",
    "format_timeout",
    "identifier_or",
    "merge_patch",
    "parse_config",
    "parse_timeout",
    "single_entry",
    "unmask",
    "url",
]

# "Warn" is the seed's own spelling in its parameter table (a typo for Warm); "NotConfigured" is
# the adapter framework's name for None. Both are accepted and stored as written, so a document
# reads back as it was sent; they behave as Warm and None.
MODES = ("Hot", "Warm", "Cold", "None", "Warn", "NotConfigured")
_BEHAVES_AS = {"Warn": "Warm", "NotConfigured": "None"}
DEFAULT_MODE = "None"  # the seed's default: a configuration without Mode is no failover
MIN_TIMEOUT = 15.0
DEFAULT_TIMEOUT = 60.0
MAX_TIMEOUT = 86_399.0  # the seed's hh:mm:ss form cannot say more than 23:59:59

# Canonical PascalCase names, in the order GET writes them.
FIELDS = (
    "Id",
    "FailoverGroupId",
    "Name",
    "Description",
    "FailoverTimeout",
    "Mode",
    *ENDPOINT_FIELDS,
)
_LOOKUP = {name.lower(): name for name in FIELDS}
_SECONDS = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,7})?")


@dataclass(frozen=True)
class ClientFailoverConfig:
    """One validated configuration. Secrets are kept out of ``repr`` and so out of every log."""

    id: str
    failover_group_id: str
    endpoint: str
    name: str | None = None
    description: str | None = None
    failover_timeout: float = DEFAULT_TIMEOUT  # seconds
    mode: str = DEFAULT_MODE
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    token_endpoint: str | None = None
    validate_endpoint_certificate: bool = True

    @property
    def behaviour(self) -> str:
        """The mode this configuration runs in: ``Warn`` is Warm, ``NotConfigured`` is None."""
        return _BEHAVES_AS.get(self.mode, self.mode)

    @property
    def enabled(self) -> bool:
        """Mode None registers nothing: the adapter runs as if failover were not configured."""
        return self.behaviour != "None"

    def to_json(self, *, masked: bool = True) -> dict[str, Any]:
        """The PascalCase document; ``masked`` replaces set secrets with asterisks (GET)."""

        def secret(value: str | None) -> str | None:
            return MASK if masked and value is not None else value

        return {
            "Id": self.id,
            "FailoverGroupId": self.failover_group_id,
            "Name": self.name,
            "Description": self.description,
            "FailoverTimeout": format_timeout(self.failover_timeout),
            "Mode": self.mode,
            "Endpoint": self.endpoint,
            "UserName": self.username,
            "Password": secret(self.password),
            "ClientId": self.client_id,
            "ClientSecret": secret(self.client_secret),
            "TokenEndpoint": self.token_endpoint,
            "ValidateEndpointCertificate": self.validate_endpoint_certificate,
        }


# --------------------------------------------------------------------------- documents


def single_entry(body: Any) -> Any:
    """The one entry of a body that is an object or an array of exactly one (the seed's form)."""
    if isinstance(body, list):
        if len(body) > 1:
            raise BadRequest(
                "Only one client failover configuration is allowed; additional configuration "
                f"entries are rejected (the array has {len(body)}).",
                resolution="Send one configuration; DELETE the existing one to start over.",
            )
        if not body:
            raise BadRequest("The array is empty; give one client failover configuration.")
        return body[0]
    return body


def parse_config(body: Any, *, default_id: str | None = None) -> ClientFailoverConfig:
    """Validate one configuration object; a missing Id becomes ``default_id`` or a new GUID."""
    v = _fields(body)
    return ClientFailoverConfig(
        id=identifier_or(v.get("Id"), default_id),
        failover_group_id=_required_text(v.get("FailoverGroupId"), "FailoverGroupId"),
        endpoint=url(v.get("Endpoint"), "Endpoint", required=True) or "",
        name=_label(v.get("Name"), "Name"),
        description=_label(v.get("Description"), "Description"),
        failover_timeout=parse_timeout(v.get("FailoverTimeout")),
        mode=_mode(v.get("Mode")),
        **credentials(v),
        token_endpoint=url(v.get("TokenEndpoint"), "TokenEndpoint", required=False),
        validate_endpoint_certificate=flag(
            v.get("ValidateEndpointCertificate"), "ValidateEndpointCertificate"
        ),
    )


def merge_patch(stored: ClientFailoverConfig, patch: Any) -> ClientFailoverConfig:
    """Apply a partial update (RFC 7396 style): given properties replace, ``null`` resets.

    The merged document is validated as a whole, so a patch cannot leave half a credential
    pair behind. Secrets sent back as the mask keep their stored value.
    """
    changes = _fields(patch)
    if "Id" in changes and changes["Id"] not in (None, "") and not _same_id(changes["Id"], stored):
        raise BadRequest(
            f"Id cannot be changed by PATCH (the configuration is '{stored.id}').",
            parameters={"Id": str(changes["Id"])[:64]},
        )
    document = {**stored.to_json(masked=False), **changes, "Id": stored.id}
    return unmask(parse_config(document), stored)


def unmask(
    config: ClientFailoverConfig, stored: ClientFailoverConfig | None
) -> ClientFailoverConfig:
    """A secret sent back as the mask (GET, edit, PUT) keeps the stored secret.

    Only the same credential kind keeps its secret (``unmask_secrets``).
    """
    return unmask_secrets(config, stored)


def _same_id(value: Any, stored: ClientFailoverConfig) -> bool:
    return isinstance(value, str) and value.lower() == stored.id.lower()


# --------------------------------------------------------------------------- fields


def _fields(body: Any) -> dict[str, Any]:
    """Map properties of any casing onto FIELDS; unknown or repeated properties are a 400."""
    if not isinstance(body, Mapping):
        raise BadRequest(
            f"A client failover configuration must be a JSON object (got {_json_type(body)}).",
            resolution='Send {"FailoverGroupId": …, "Endpoint": …, "Mode": …} or an array of one.',
        )
    values: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in body.items():
        name = _LOOKUP.get(key.lower())
        if name is None:
            unknown.append(key[:64])
        elif name in values:
            raise BadRequest(f"Property {name} is given more than once.", parameters={name: ""})
        else:
            values[name] = value
    if unknown:
        raise BadRequest(
            f"Unknown property {', '.join(sorted(unknown)[:10])}; allowed: {', '.join(FIELDS)}.",
            parameters={name: "unknown" for name in sorted(unknown)[:10]},
        )
    return values


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number"}
    return "null" if value is None else names.get(type(value), "a number")


def _required_text(value: Any, name: str) -> str:
    if value is None or value == "":
        raise BadRequest(f"{name} is required.", parameters={name: ""})
    return identifier(value, name)


def _label(value: Any, name: str) -> str | None:
    """Name and Description: optional, but at least one character when given (AF MinLength 1)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise BadRequest(
            f"{name} must be a non-empty string or null.", parameters={name: repr(value)[:64]}
        )
    return bounded(value, name)


def _mode(value: Any) -> str:
    if value is None:
        return DEFAULT_MODE
    if isinstance(value, str):
        wanted = value.strip().lower()
        for mode in MODES:
            if mode.lower() == wanted:
                return mode
    raise BadRequest(
        f"Mode '{str(value)[:32]}' is not one of: {', '.join(MODES)}.",
        parameters={"Mode": str(value)[:32]},
    )


# --------------------------------------------------------------------------- FailoverTimeout


def parse_timeout(value: Any) -> float:
    """``hh:mm:ss`` (or a number of seconds, also as a string) → seconds, within bounds."""
    if value is None:
        return DEFAULT_TIMEOUT
    if isinstance(value, str) and _is_number(value):
        value = float(value)
    seconds = parse_timespan(value, "FailoverTimeout") / TICKS_PER_SECOND
    if seconds < MIN_TIMEOUT:
        raise BadRequest(
            f"FailoverTimeout {str(value)[:32]} is shorter than the minimum 00:00:15.",
            parameters={"FailoverTimeout": str(value)[:32]},
        )
    if seconds > MAX_TIMEOUT:
        raise BadRequest(
            f"FailoverTimeout {str(value)[:32]} is longer than the maximum 23:59:59.",
            parameters={"FailoverTimeout": str(value)[:32]},
        )
    return seconds


def _is_number(text: str) -> bool:
    # ASCII only: float() also accepts other scripts' digits, "inf", "nan" and "1_0".
    return _SECONDS.fullmatch(text.strip()) is not None


def format_timeout(seconds: float) -> str:
    """Seconds as ``hh:mm:ss`` (with ``.fffffff`` only when there is a fraction)."""
    ticks = round(seconds * TICKS_PER_SECOND)
    whole, frac = divmod(ticks, TICKS_PER_SECOND)
    hours, rest = divmod(whole, 3600)
    text = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return text + (f".{frac:07d}" if frac else "")
