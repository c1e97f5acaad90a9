"""`/api/v1/configuration`: global configuration, log level, health endpoints (spec §2.3 rows 13-16).

Every change is a replicated command; reads come from this node's replicated state. Secrets are
masked on every answer; a masked secret sent back (GET, edit, PUT) keeps the stored one.
Authorization (Administrators) is enforced in front of these routes (auth.py), not here.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from cfs_cluster import engine
from cfs_cluster.api.requests import node_of, request_id
from cfs_cluster.cluster.node import Node
from cfs_cluster.engine import configuration as config
from cfs_cluster.errors import BadRequest, NotFound
from cfs_cluster.ops.logs import current_level
from cfs_cluster.protocol.bodies import ErrorResponse, load_json
from cfs_cluster.protocol.validators import ENDPOINT_SCHEMA_PROPERTIES

__all__ = ["router"]

log = logging.getLogger("cfs.configuration")
router = APIRouter(prefix="/api/v1/configuration", tags=["configuration"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 409, 413, 503)
}
_ENDPOINT_SCHEMA = {
    "type": "object",
    "required": ["Endpoint"],
    "properties": {
        "Id": {"type": "string"},
        **ENDPOINT_SCHEMA_PROPERTIES,
    },
}
_LOGGING_SCHEMA = {
    "type": "object",
    "required": ["LogLevel"],
    "properties": {"LogLevel": {"type": "string", "enum": list(config.LOG_LEVELS)}},
}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _config(node: Node) -> config.GlobalConfig:
    return config.current(node.replicator.state)


def _logging_json(node: Node) -> dict[str, Any]:
    level = _config(node).log_level
    # EffectiveLogLevel: what this node logs at right now (the replicated level once applied).
    return {"LogLevel": level or config.DEFAULT_LOG_LEVEL, "EffectiveLogLevel": current_level()}


def _endpoints_json(node: Node) -> list[dict[str, Any]]:
    return [config.endpoint_json(e) for e in _config(node).health_endpoints]


def _unmasked(
    node: Node, endpoints: tuple[config.HealthEndpoint, ...]
) -> tuple[config.HealthEndpoint, ...]:
    stored = _config(node)
    return tuple(config.unmask(e, stored.endpoint(e.id)) for e in endpoints)


def _describe(endpoints: tuple[config.HealthEndpoint, ...]) -> str:
    """For the log: ids and URLs only (the dataclass repr already leaves secrets out)."""
    return ", ".join(f"'{e.id}' -> {e.endpoint}" for e in endpoints) or "none"


# --------------------------------------------------------------------------- global


@router.get("", summary="Get the global configuration (secrets masked)", responses=_ERRORS)
async def get_configuration(request: Request) -> dict[str, Any]:
    node = node_of(request)
    return {"Logging": _logging_json(node), "HealthEndpoints": _endpoints_json(node)}


@router.put(
    "",
    summary="Set the global configuration; a missing section stays unchanged",
    responses=_ERRORS,
    openapi_extra=_body(
        {
            "type": "object",
            "properties": {
                "Logging": _LOGGING_SCHEMA,
                "HealthEndpoints": {"type": "array", "items": _ENDPOINT_SCHEMA},
            },
        }
    ),
)
async def put_configuration(request: Request) -> dict[str, Any]:
    node = node_of(request)
    level, endpoints = config.parse_configuration(load_json(await request.body()))
    if endpoints is not None:
        endpoints = _unmasked(node, endpoints)
    await node.submit(engine.SetConfiguration(request_id(request), level, endpoints))
    if level is not None:
        log.info("Log level set to %s.", level)
    if endpoints is not None:
        log.info("Health endpoints replaced: %s.", _describe(endpoints))
    return await get_configuration(request)


# --------------------------------------------------------------------------- logging


@router.get("/logging", summary="Get the log level", responses=_ERRORS)
async def get_logging(request: Request) -> dict[str, Any]:
    return _logging_json(node_of(request))


@router.put(
    "/logging",
    summary="Set the log level of every node (replicated)",
    responses=_ERRORS,
    openapi_extra=_body(_LOGGING_SCHEMA),
)
async def put_logging(request: Request) -> dict[str, Any]:
    node = node_of(request)
    level = config.parse_logging(load_json(await request.body()))
    await node.submit(engine.SetConfiguration(request_id(request), log_level=level))
    log.info("Log level set to %s.", level)
    return {"LogLevel": level}


# --------------------------------------------------------------------------- health endpoints


@router.get("/healthEndpoints", summary="List health endpoints (secrets masked)", responses=_ERRORS)
async def list_endpoints(request: Request) -> list[dict[str, Any]]:
    return _endpoints_json(node_of(request))


@router.post(
    "/healthEndpoints",
    summary="Add one health endpoint or an array; fails (409) if any Id exists",
    status_code=201,
    responses=_ERRORS,
    openapi_extra=_body(
        {"oneOf": [_ENDPOINT_SCHEMA, {"type": "array", "items": _ENDPOINT_SCHEMA}]}
    ),
)
async def add_endpoints(request: Request) -> Response:
    node = node_of(request)
    body = load_json(await request.body())
    endpoints = config.parse_endpoints(body, allow_single=True)
    if not endpoints:
        raise BadRequest("The array is empty; give at least one health endpoint.")
    if any(config.MASK in (e.password, e.client_secret) for e in endpoints):
        raise BadRequest(
            "A new health endpoint needs its real Password/ClientSecret, not the mask."
        )
    await node.submit(engine.AddHealthEndpoints(request_id(request), endpoints))
    log.info("Health endpoints added: %s.", _describe(endpoints))
    rendered = [config.endpoint_json(e) for e in endpoints]
    return JSONResponse(rendered if isinstance(body, list) else rendered[0], status_code=201)


@router.put(
    "/healthEndpoints",
    summary="Replace every health endpoint (body: an array)",
    responses=_ERRORS,
    openapi_extra=_body({"type": "array", "items": _ENDPOINT_SCHEMA}),
)
async def replace_endpoints(request: Request) -> list[dict[str, Any]]:
    node = node_of(request)
    endpoints = config.parse_endpoints(load_json(await request.body()), allow_single=False)
    endpoints = _unmasked(node, endpoints)
    await node.submit(engine.SetConfiguration(request_id(request), health_endpoints=endpoints))
    log.info("Health endpoints replaced: %s.", _describe(endpoints))
    return [config.endpoint_json(e) for e in endpoints]


@router.delete(
    "/healthEndpoints", status_code=204, summary="Delete every health endpoint", responses=_ERRORS
)
async def delete_endpoints(request: Request) -> Response:
    await node_of(request).submit(engine.SetConfiguration(request_id(request), health_endpoints=()))
    log.info("Health endpoints deleted.")
    return Response(status_code=204)


@router.get("/healthEndpoints/{endpoint_id}", summary="Get one health endpoint", responses=_ERRORS)
async def get_endpoint(request: Request, endpoint_id: str) -> dict[str, Any]:
    return config.endpoint_json(_find_any_case(node_of(request), endpoint_id))


@router.put(
    "/healthEndpoints/{endpoint_id}",
    summary="Update the health endpoint with this Id (404 if there is none)",
    responses=_ERRORS,
    openapi_extra=_body(_ENDPOINT_SCHEMA),
)
async def update_endpoint(request: Request, endpoint_id: str) -> dict[str, Any]:
    node = node_of(request)
    stored = _find_any_case(node, endpoint_id)
    endpoint = config.parse_endpoint(load_json(await request.body()), default_id=stored.id)
    if endpoint.id.lower() != stored.id.lower():
        raise BadRequest(f"The body's Id '{endpoint.id}' differs from the URL's '{endpoint_id}'.")
    endpoint = config.unmask(endpoint, stored)
    result = await node.submit(engine.UpdateHealthEndpoint(request_id(request), endpoint))
    _raise_missing(result, endpoint_id)
    log.info("Health endpoint updated: %s.", _describe((endpoint,)))
    return config.endpoint_json(endpoint)


@router.delete(
    "/healthEndpoints/{endpoint_id}",
    status_code=204,
    summary="Delete one health endpoint",
    responses=_ERRORS,
)
async def delete_endpoint(request: Request, endpoint_id: str) -> Response:
    result = await node_of(request).submit(
        engine.DeleteHealthEndpoint(request_id(request), endpoint_id)
    )
    _raise_missing(result, endpoint_id)
    log.info("Health endpoint '%s' deleted.", endpoint_id)
    return Response(status_code=204)


def _find_any_case(node: Node, endpoint_id: str) -> config.HealthEndpoint:
    wanted = endpoint_id.lower()
    for endpoint in _config(node).health_endpoints:
        if endpoint.id.lower() == wanted:
            return endpoint
    raise NotFound(f"Health endpoint '{endpoint_id}' was not found.")


def _raise_missing(result: engine.Result, endpoint_id: str) -> None:
    if result.code == engine.Code.ENDPOINT_NOT_FOUND:
        raise NotFound(f"Health endpoint '{endpoint_id}' was not found.")
