"""The facet's REST URLs (seed 002 "REST URLs"; spec §5.2) as an embeddable ``APIRouter``.

    api/v1/configuration/System/ClientFailover        GET POST PUT PATCH DELETE
    api/v1/configuration/System/ClientFailover/{id}   GET PUT PATCH DELETE
    api/v1/diagnostics/FailoverState                  GET
    api/v1/configuration/System/HealthEndpoints       GET POST PUT DELETE
    api/v1/configuration/System/HealthEndpoints/{id}  GET PUT DELETE

The router renders its own errors as the CFS ``ErrorResponse`` (its route class catches
``CfsError``), so an adapter can include it in any FastAPI app without our exception handlers.
Bodies are read and parsed by hand: any JSON (or none) reaches model.py, which answers a 400
naming the field, so no request body can cause a 500.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from cfs_cluster.api.errors import render
from cfs_cluster.errors import CfsError, PayloadTooLarge
from cfs_cluster.facet.healthendpoints import health_json
from cfs_cluster.facet.model import MODES
from cfs_cluster.facet.service import ClientFailoverFacet
from cfs_cluster.protocol.bodies import ErrorResponse, load_json
from cfs_cluster.protocol.validators import ENDPOINT_SCHEMA_PROPERTIES

__all__ = [
    "CONFIGURATION_PATH",
    "HEALTH_PATH",
    "MAX_BODY_BYTES",
    "STATE_PATH",
    "create_router",
]

CONFIGURATION_PATH = "/api/v1/configuration/System/ClientFailover"
STATE_PATH = "/api/v1/diagnostics/FailoverState"
HEALTH_PATH = "/api/v1/configuration/System/HealthEndpoints"
MAX_BODY_BYTES = 64 * 1024
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 409, 413)
}
_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["FailoverGroupId", "Endpoint"],
    "properties": {
        "Id": {"type": "string"},
        "FailoverGroupId": {"type": "string"},
        "Name": {"type": "string"},
        "Description": {"type": "string"},
        "FailoverTimeout": {"type": "string", "default": "00:01:00", "example": "00:01:00"},
        "Mode": {"type": "string", "enum": list(MODES), "default": "None"},
        **ENDPOINT_SCHEMA_PROPERTIES,
    },
}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_ONE_OR_ARRAY = _body({"oneOf": [_SCHEMA, {"type": "array", "items": _SCHEMA, "maxItems": 1}]})
_PATCH = _body({**_SCHEMA, "required": []})


class _FacetRoute(APIRoute):
    """Renders every ``CfsError`` as an ErrorResponse, whatever app the router is in."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except CfsError as exc:
                return render(exc)

        return route


async def read_json(request: Request) -> Any:
    """The JSON body, refusing more than MAX_BODY_BYTES before reading it all."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"The body is larger than {MAX_BODY_BYTES} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"The body is larger than {MAX_BODY_BYTES} bytes.")
        chunks.append(chunk)
    return load_json(b"".join(chunks))


def create_router(facet: ClientFailoverFacet) -> APIRouter:
    """The facet's routes over ``facet``; include it in the adapter's FastAPI app."""
    router = APIRouter(tags=["client failover (adapter side)"], route_class=_FacetRoute)
    _configuration_routes(router, facet)
    _item_routes(router, facet)
    _health_routes(router, facet)

    @router.get(STATE_PATH, summary="The current failover state", responses=_ERRORS)
    async def failover_state() -> dict[str, Any]:
        return facet.state().to_json()

    return router


def _configuration_routes(router: APIRouter, facet: ClientFailoverFacet) -> None:
    @router.get(CONFIGURATION_PATH, summary="The configuration: a list of at most one")
    async def list_configurations() -> list[dict[str, Any]]:
        config = facet.config
        return [] if config is None else [config.to_json()]

    @router.post(
        CONFIGURATION_PATH,
        status_code=201,
        summary="Add the configuration; 409 if one exists",
        responses=_ERRORS,
        openapi_extra=_ONE_OR_ARRAY,
    )
    async def create(request: Request) -> JSONResponse:
        body = await read_json(request)
        config = await facet.create(body)
        return _echo(body, config.to_json(), 201)

    @router.put(
        CONFIGURATION_PATH,
        summary="Replace the configuration (or create it)",
        responses=_ERRORS,
        openapi_extra=_ONE_OR_ARRAY,
    )
    async def replace(request: Request) -> JSONResponse:
        body = await read_json(request)
        config = await facet.replace(body)
        return _echo(body, config.to_json(), 200)

    @router.patch(
        CONFIGURATION_PATH,
        summary="Change some properties of the configuration",
        responses=_ERRORS,
        openapi_extra=_PATCH,
    )
    async def patch(request: Request) -> dict[str, Any]:
        config = await facet.patch(None, await read_json(request))
        return config.to_json()

    @router.delete(
        CONFIGURATION_PATH,
        status_code=204,
        summary="Delete the configuration: unregister and run without failover",
    )
    async def delete() -> Response:
        await facet.delete(None)
        return Response(status_code=204)


def _item_routes(router: APIRouter, facet: ClientFailoverFacet) -> None:
    item = CONFIGURATION_PATH + "/{config_id}"

    @router.get(item, summary="The configuration with this Id", responses=_ERRORS)
    async def get_one(config_id: str) -> dict[str, Any]:
        return facet.get(config_id).to_json()

    @router.put(
        item,
        summary="Replace the configuration with this Id; 404 if absent",
        responses=_ERRORS,
        openapi_extra=_ONE_OR_ARRAY,
    )
    async def replace_one(config_id: str, request: Request) -> dict[str, Any]:
        config = await facet.replace_by_id(config_id, await read_json(request))
        return config.to_json()

    @router.patch(
        item,
        summary="Change some properties of the configuration with this Id",
        responses=_ERRORS,
        openapi_extra=_PATCH,
    )
    async def patch_one(config_id: str, request: Request) -> dict[str, Any]:
        config = await facet.patch(config_id, await read_json(request))
        return config.to_json()

    @router.delete(
        item, status_code=204, summary="Delete the configuration with this Id", responses=_ERRORS
    )
    async def delete_one(config_id: str) -> Response:
        await facet.delete(config_id)
        return Response(status_code=204)


def _health_routes(router: APIRouter, facet: ClientFailoverFacet) -> None:
    """The HealthEndpoints facet, as the adapter framework's (spec §6.2): secrets masked."""
    item = HEALTH_PATH + "/{endpoint_id}"

    @router.get(HEALTH_PATH, summary="The failover health endpoints")
    async def list_health() -> list[dict[str, Any]]:
        return [health_json(e) for e in facet.health_endpoints]

    @router.post(HEALTH_PATH, status_code=201, summary="Add health endpoints", responses=_ERRORS)
    async def add_health(request: Request) -> JSONResponse:
        body = await read_json(request)
        added = [health_json(e) for e in await facet.add_health_endpoints(body)]
        return JSONResponse(added if isinstance(body, list) else added[0], status_code=201)

    @router.put(HEALTH_PATH, summary="Replace every health endpoint", responses=_ERRORS)
    async def replace_health(request: Request) -> list[dict[str, Any]]:
        endpoints = await facet.replace_health_endpoints(await read_json(request))
        return [health_json(e) for e in endpoints]

    @router.delete(HEALTH_PATH, status_code=204, summary="Delete every health endpoint")
    async def delete_health() -> Response:
        await facet.delete_health_endpoints(None)
        return Response(status_code=204)

    @router.get(item, summary="The health endpoint with this Id", responses=_ERRORS)
    async def get_health(endpoint_id: str) -> dict[str, Any]:
        return health_json(facet.health_endpoint(endpoint_id))

    @router.put(item, summary="Replace the health endpoint with this Id", responses=_ERRORS)
    async def replace_one_health(endpoint_id: str, request: Request) -> dict[str, Any]:
        body = await read_json(request)
        return health_json(await facet.replace_health_endpoint(endpoint_id, body))

    @router.delete(
        item, status_code=204, summary="Delete the health endpoint with this Id", responses=_ERRORS
    )
    async def delete_one_health(endpoint_id: str) -> Response:
        await facet.delete_health_endpoints(endpoint_id)
        return Response(status_code=204)


def _echo(body: Any, document: dict[str, Any], status: int) -> JSONResponse:
    """Answer in the shape asked: an array of one for the seed's array form, else the object."""
    return JSONResponse([document] if isinstance(body, list) else document, status_code=status)
