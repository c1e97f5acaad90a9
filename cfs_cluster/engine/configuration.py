"""The replicated global configuration: log level and health endpoints (spec §2.3 rows 13-16, §6.2).

Everything here is pure: request bodies are parsed and validated into frozen values before they
are replicated, and the engine stores them as they are. Secrets (``Password``, ``ClientSecret``)
never leave through the API unmasked and never appear in a ``repr`` (and so in no log line).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from cfs_cluster.engine.commands import Code, Command, Handler, Result
from cfs_cluster.engine.upgradable import Upgradable
from cfs_cluster.errors import BadRequest
from cfs_cluster.protocol.validators import (
    ENDPOINT_FIELDS,
    MASK,
    HealthEndpointSettings,
    credentials,
    flag,
    unmask_secrets,
    url,
)
from cfs_cluster.protocol.wire import normalize_keys

__all__ = [
    "DEFAULT_LOG_LEVEL",
    "LOG_LEVELS",
    "MASK",
    "GlobalConfig",
    "HealthEndpoint",
    "current",
    "endpoint_json",
    "parse_configuration",
    "parse_endpoint",
    "parse_endpoints",
    "parse_log_level",
    "unmask",
]

# Spec §7, low to high. Setting a level includes every higher one.
LOG_LEVELS = ("Verbose", "Debug", "Information", "Warning", "Error", "Fatal")
DEFAULT_LOG_LEVEL = "Information"
MAX_ENDPOINTS = 32
_ENDPOINT_KEYS = (
    "Id",
    *ENDPOINT_FIELDS,
    # Deprecated (spec §6.2 PROPOSAL): accepted and ignored.
    "Buffering",
    "MaxBufferSizeMB",
    "DebugExpiration",
)


@dataclass(frozen=True)
class HealthEndpoint(HealthEndpointSettings, Upgradable):
    """One OMF destination as replicated (the facet's fields; secrets are kept out of ``repr``)."""


@dataclass(frozen=True)
class GlobalConfig(Upgradable):
    """``log_level`` None = never set: each node keeps the level it was started with."""

    log_level: str | None = None
    health_endpoints: tuple[HealthEndpoint, ...] = ()

    def endpoint(self, endpoint_id: str) -> HealthEndpoint | None:
        for item in self.health_endpoints:
            if item.id == endpoint_id:
                return item
        return None


def current(state: ClusterState) -> GlobalConfig:
    """The configuration of a ClusterState (Upgradable fills it in on an older snapshot)."""
    return state.config


# --------------------------------------------------------------------------- parsing


def parse_log_level(value: Any, field_name: str = "LogLevel") -> str:
    """A level name in any casing (or its index 0-5); returns the canonical name."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(LOG_LEVELS):
        return LOG_LEVELS[value]
    if isinstance(value, str):
        wanted = value.strip().lower()
        for name in LOG_LEVELS:
            if name.lower() == wanted:
                return name
    raise BadRequest(
        f"{field_name} '{str(value)[:32]}' is not one of: {', '.join(LOG_LEVELS)}.",
        parameters={field_name: str(value)[:32]},
    )


def parse_logging(body: Any) -> str:
    if not isinstance(body, Mapping):
        raise BadRequest('The logging configuration must be an object: {"LogLevel": "<level>"}.')
    values = normalize_keys(body, ("LogLevel",))
    if "LogLevel" not in values:
        raise BadRequest("LogLevel is required.")
    return parse_log_level(values["LogLevel"])


def parse_endpoint(body: Any, *, default_id: str | None = None) -> HealthEndpoint:
    """Validate one health endpoint (spec §6.2). A missing Id gets ``default_id`` or a GUID."""
    if not isinstance(body, Mapping):
        raise BadRequest("A health endpoint must be a JSON object.")
    v = normalize_keys(body, _ENDPOINT_KEYS)
    endpoint_id = _id(v.get("Id"), default_id)
    endpoint = url(v.get("Endpoint"), "Endpoint", required=True)
    pairs = credentials(v)
    token_endpoint = url(v.get("TokenEndpoint"), "TokenEndpoint", required=False)
    if token_endpoint is not None and pairs["client_id"] is None:
        raise BadRequest("TokenEndpoint is only used with ClientId/ClientSecret.")
    return HealthEndpoint(
        id=endpoint_id,
        endpoint=endpoint or "",
        **pairs,
        token_endpoint=token_endpoint,
        validate_certificate=flag(
            v.get("ValidateEndpointCertificate"), "ValidateEndpointCertificate"
        ),
    )


def parse_endpoints(body: Any, *, allow_single: bool) -> tuple[HealthEndpoint, ...]:
    """An array of endpoints (or one object when ``allow_single``); Ids must be unique."""
    items = [body] if allow_single and isinstance(body, Mapping) else body
    if not isinstance(items, list):
        what = (
            "a health endpoint object or an array of them"
            if allow_single
            else "an array of health endpoints"
        )
        raise BadRequest(f"The body must be {what}.")
    if len(items) > MAX_ENDPOINTS:
        raise BadRequest(f"At most {MAX_ENDPOINTS} health endpoints can be configured.")
    endpoints = tuple(parse_endpoint(item) for item in items)
    ids = [e.id.lower() for e in endpoints]
    duplicates = sorted({e.id for e in endpoints if ids.count(e.id.lower()) > 1})
    if duplicates:
        raise BadRequest(f"Health endpoint Id given more than once: {', '.join(duplicates)}.")
    return endpoints


def parse_configuration(body: Any) -> tuple[str | None, tuple[HealthEndpoint, ...] | None]:
    """``{"Logging": {...}, "HealthEndpoints": [...]}``; a missing section stays unchanged."""
    if not isinstance(body, Mapping):
        raise BadRequest(
            'The configuration must be an object: {"Logging": …, "HealthEndpoints": […]}.'
        )
    values = normalize_keys(body, ("Logging", "HealthEndpoints"))
    if not values:
        raise BadRequest("The configuration must contain Logging and/or HealthEndpoints.")
    level = parse_logging(values["Logging"]) if values.get("Logging") is not None else None
    raw = values.get("HealthEndpoints")
    endpoints = None if raw is None else parse_endpoints(raw, allow_single=False)
    return level, endpoints


def unmask(endpoint: HealthEndpoint, stored: HealthEndpoint | None) -> HealthEndpoint:
    """A secret sent back as the mask (a GET, edited, PUT back) keeps the stored secret.

    Only under the same UserName or ClientId, as the facet's HealthEndpoints (``unmask_secrets``).
    """
    return unmask_secrets(endpoint, stored)


def endpoint_json(endpoint: HealthEndpoint) -> dict[str, Any]:
    """The GET shape: PascalCase, secrets masked (spec §2.3 "replaced with asterisks")."""
    return {
        "Id": endpoint.id,
        "Endpoint": endpoint.endpoint,
        "UserName": endpoint.username,
        "Password": None if endpoint.password is None else MASK,
        "ClientId": endpoint.client_id,
        "ClientSecret": None if endpoint.client_secret is None else MASK,
        "TokenEndpoint": endpoint.token_endpoint,
        "ValidateEndpointCertificate": endpoint.validate_certificate,
    }


def _id(value: Any, default_id: str | None) -> str:
    if value is None or value == "":
        return default_id or str(uuid.uuid4())
    if not isinstance(value, str):
        raise BadRequest("Id must be a string.")
    if len(value) > 256 or not all(c.isalnum() or c in "-_." for c in value):
        raise BadRequest(
            "Id must be 1-256 letters, digits, '-', '_' or '.'.", parameters={"Id": value[:64]}
        )
    return value


if TYPE_CHECKING:
    from cfs_cluster.engine.state import ClusterState


# The commands: values arrive validated (the parsers above), so these handlers only store them.


@dataclass(frozen=True)
class SetConfiguration(Command):
    """PUT /configuration: a None section stays unchanged."""

    log_level: str | None = None
    health_endpoints: tuple[HealthEndpoint, ...] | None = None


@dataclass(frozen=True)
class AddHealthEndpoints(Command):
    """POST: adds all or nothing; refused if any Id exists (ids compare case-insensitively)."""

    endpoints: tuple[HealthEndpoint, ...]


@dataclass(frozen=True)
class UpdateHealthEndpoint(Command):
    endpoint: HealthEndpoint


@dataclass(frozen=True)
class DeleteHealthEndpoint(Command):
    endpoint_id: str


def _set_configuration(state: ClusterState, cmd: SetConfiguration) -> Result:
    config = state.config
    if cmd.log_level is not None:
        config = replace(config, log_level=cmd.log_level)
    if cmd.health_endpoints is not None:
        config = replace(config, health_endpoints=tuple(cmd.health_endpoints))
    state.config = config
    return Result(Code.OK)


def _add_health_endpoints(state: ClusterState, cmd: AddHealthEndpoints) -> Result:
    config = state.config
    existing = {e.id.lower() for e in config.health_endpoints}
    clash = [e.id for e in cmd.endpoints if e.id.lower() in existing]
    if clash:
        return Result(Code.CONFLICT, f"Health endpoint(s) already exist: {', '.join(clash)}.")
    state.config = replace(config, health_endpoints=(*config.health_endpoints, *cmd.endpoints))
    return Result(Code.CREATED)


def _update_health_endpoint(state: ClusterState, cmd: UpdateHealthEndpoint) -> Result:
    config = state.config
    wanted = cmd.endpoint.id.lower()
    if not any(e.id.lower() == wanted for e in config.health_endpoints):
        return Result(
            Code.ENDPOINT_NOT_FOUND, f"Health endpoint '{cmd.endpoint.id}' was not found."
        )
    endpoints = tuple(
        cmd.endpoint if e.id.lower() == wanted else e for e in config.health_endpoints
    )
    state.config = replace(config, health_endpoints=endpoints)
    return Result(Code.OK)


def _delete_health_endpoint(state: ClusterState, cmd: DeleteHealthEndpoint) -> Result:
    config = state.config
    wanted = cmd.endpoint_id.lower()
    kept = tuple(e for e in config.health_endpoints if e.id.lower() != wanted)
    if len(kept) == len(config.health_endpoints):
        return Result(
            Code.ENDPOINT_NOT_FOUND, f"Health endpoint '{cmd.endpoint_id}' was not found."
        )
    state.config = replace(config, health_endpoints=kept)
    return Result(Code.DELETED)


HANDLERS: Mapping[type[Command], Handler] = {
    SetConfiguration: _set_configuration,
    AddHealthEndpoints: _add_health_endpoints,
    UpdateHealthEndpoint: _update_health_endpoint,
    DeleteHealthEndpoint: _delete_health_endpoint,
}
