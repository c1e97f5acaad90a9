"""The HealthEndpoints facet of component System: where failover health goes (spec §5.9, §6.2).

Configured as the adapter framework's health endpoints are (AD ``health-endpoints.md``), at
``api/v1/configuration/System/HealthEndpoints``: a list of OMF endpoints, each ``Id``,
``Endpoint``, ``UserName``/``Password`` (PI Web API) or ``ClientId``/``ClientSecret``
(CONNECT data services), ``TokenEndpoint``, ``ValidateEndpointCertificate``. ``Buffering``,
``MaxBufferSizeMB`` (deprecated) and ``DebugExpiration`` are accepted and ignored, as the
framework drops them. Pure: a parsed JSON body in, frozen values out, or a ``BadRequest``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cfs_cluster.errors import BadRequest
from cfs_cluster.protocol.validators import (
    ENDPOINT_FIELDS,
    MASK,
    HealthEndpointSettings,
    credentials,
    flag,
    identifier_or,
    unmask_secrets,
    url,
)

__all__ = [
    "HEALTH_FIELDS",
    "MAX_HEALTH_ENDPOINTS",
    "health_json",
    "parse_health_endpoint",
    "parse_health_endpoints",
    "unmask_health",
]

MAX_HEALTH_ENDPOINTS = 16
HEALTH_FIELDS = ("Id", *ENDPOINT_FIELDS)
_IGNORED = ("Buffering", "MaxBufferSizeMB", "DebugExpiration")
_LOOKUP = {name.lower(): name for name in (*HEALTH_FIELDS, *_IGNORED)}


def parse_health_endpoint(body: Any, *, default_id: str | None = None) -> HealthEndpointSettings:
    """One endpoint object; a missing Id becomes ``default_id`` or a new GUID."""
    v = _fields(body)
    pairs = credentials(v)
    return HealthEndpointSettings(
        id=identifier_or(v.get("Id"), default_id),
        endpoint=url(v.get("Endpoint"), "Endpoint", required=True) or "",
        username=pairs["username"],
        password=pairs["password"],
        client_id=pairs["client_id"],
        client_secret=pairs["client_secret"],
        token_endpoint=url(v.get("TokenEndpoint"), "TokenEndpoint", required=False),
        validate_certificate=flag(
            v.get("ValidateEndpointCertificate"), "ValidateEndpointCertificate"
        ),
    )


def parse_health_endpoints(body: Any) -> tuple[HealthEndpointSettings, ...]:
    """An array of endpoints (or one object); Ids must be unique (in any casing)."""
    items = body if isinstance(body, list) else [body]
    if len(items) > MAX_HEALTH_ENDPOINTS:
        raise BadRequest(f"At most {MAX_HEALTH_ENDPOINTS} health endpoints are allowed.")
    endpoints = tuple(parse_health_endpoint(item) for item in items)
    seen: set[str] = set()
    for endpoint in endpoints:
        if endpoint.id.lower() in seen:
            raise BadRequest(
                f"Health endpoint Id '{endpoint.id[:64]}' is given twice.",
                parameters={"Id": endpoint.id[:64]},
            )
        seen.add(endpoint.id.lower())
    return endpoints


def unmask_health(
    endpoint: HealthEndpointSettings, stored: HealthEndpointSettings | None
) -> HealthEndpointSettings:
    """A secret sent back as the mask keeps the stored one, for the same account only."""
    return unmask_secrets(endpoint, stored)


def health_json(endpoint: HealthEndpointSettings, *, masked: bool = True) -> dict[str, Any]:
    def secret(value: str | None) -> str | None:
        return MASK if masked and value is not None else value

    return {
        "Id": endpoint.id,
        "Endpoint": endpoint.endpoint,
        "UserName": endpoint.username,
        "Password": secret(endpoint.password),
        "ClientId": endpoint.client_id,
        "ClientSecret": secret(endpoint.client_secret),
        "TokenEndpoint": endpoint.token_endpoint,
        "ValidateEndpointCertificate": endpoint.validate_certificate,
    }


def _fields(body: Any) -> dict[str, Any]:
    if not isinstance(body, Mapping):
        raise BadRequest(
            "A health endpoint must be a JSON object.",
            resolution='Send {"Endpoint": "https://pi-web-api/piwebapi/omf", …} or an array.',
        )
    values: dict[str, Any] = {}
    for key, value in body.items():
        name = _LOOKUP.get(str(key).lower())
        if name is None:
            raise BadRequest(
                f"Unknown property {str(key)[:64]}; allowed: {', '.join(HEALTH_FIELDS)}.",
                parameters={str(key)[:64]: "unknown"},
            )
        if name in values:
            raise BadRequest(f"Property {name} is given more than once.", parameters={name: ""})
        values[name] = value
    return {k: v for k, v in values.items() if k not in _IGNORED}
