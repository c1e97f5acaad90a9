"""`/api/v1/clients`: OAuth clients of the client-credentials grant (administrators only).

Managed like users (api/users.py): secrets are generated (or checked) and hashed here, on the
receiving node, before the command is replicated; the state machine only sees hashes. A secret
is shown once, in the answer that created it, and is never logged.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from cfs_cluster import engine
from cfs_cluster.api.requests import node_of
from cfs_cluster.cluster.node import Node
from cfs_cluster.errors import BadRequest, NotFound
from cfs_cluster.protocol.bodies import ErrorResponse, load_json
from cfs_cluster.security.passwords import check_user_name, hash_password, parse_role

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/clients", tags=["clients"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 503)
}
_NO_STORE = {"cache-control": "no-store"}
MIN_SECRET_LENGTH, MAX_SECRET_LENGTH = 16, 256


def _client_json(client: engine.OAuthClient) -> dict[str, str]:
    return {"ClientId": client.client_id, "Role": client.role}


async def _fields(request: Request, required: bool = True) -> dict[str, Any]:
    """Property names in any casing (spec §2.1); an empty body is ``{}`` unless required."""
    raw = await request.body()
    if not raw.strip() and not required:
        return {}
    body = load_json(raw)
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return {str(k).lower(): v for k, v in body.items()}


def check_client_id(value: object) -> str:
    try:
        return check_user_name(value)
    except BadRequest as exc:
        raise BadRequest(exc.reason.replace("Name", "ClientId")) from None


def _secret(value: object) -> str:
    """A supplied secret (checked), or a new random one: 256 bits, URL-safe."""
    if value is None:
        return secrets.token_urlsafe(32)
    if (
        not isinstance(value, str)
        or not MIN_SECRET_LENGTH <= len(value) <= MAX_SECRET_LENGTH
        or not value.isascii()
        or not value.isprintable()
        or " " in value
    ):
        raise BadRequest(
            f"ClientSecret must be {MIN_SECRET_LENGTH}-{MAX_SECRET_LENGTH} printable ASCII "
            "characters without spaces; omit it to have one generated."
        )
    return value


async def _submit(node: Node, command: engine.Command, client_id: str) -> None:
    result = await node.submit(command)
    if result.code == engine.Code.CLIENT_NOT_FOUND:
        raise NotFound(f"Client '{client_id}' was not found.")


def _with_secret(node: Node, client_id: str, secret: str, status: int) -> JSONResponse:
    client = node.replicator.state.clients.get(client_id)
    if client is None:  # removed by a concurrent request
        raise NotFound(f"Client '{client_id}' was not found.")
    body = {**_client_json(client), "ClientSecret": secret}
    return JSONResponse(body, status_code=status, headers=_NO_STORE)


@router.get("", summary="List OAuth clients and their roles", responses=_ERRORS)
async def list_clients(request: Request) -> list[dict[str, str]]:
    clients = node_of(request).replicator.state.clients
    return [_client_json(c) for c in sorted(clients.values(), key=lambda c: c.client_id)]


@router.get("/{client_id}", summary="One OAuth client", responses=_ERRORS)
async def get_client(request: Request, client_id: str) -> dict[str, str]:
    return _known_client(node_of(request), client_id)


def _known_client(node: Node, client_id: str) -> dict[str, str]:
    client = node.replicator.state.clients.get(client_id)
    if client is None:
        raise NotFound(f"Client '{client_id}' was not found.")
    return _client_json(client)


@router.post(
    "",
    summary="Create a client: {ClientId?, ClientSecret?, Role}; the secret is shown only here",
    status_code=201,
    responses=_ERRORS,
)
async def add_client(request: Request) -> Response:
    fields = await _fields(request)
    given = fields.get("clientid")
    client_id = check_client_id(str(uuid.uuid4()) if given is None else given)
    secret = _secret(fields.get("clientsecret"))
    role = parse_role(fields.get("role", "users"))
    secret_hash = await asyncio.to_thread(hash_password, secret)
    node = node_of(request)
    await _submit(node, engine.AddClient(uuid.uuid4().hex, client_id, role, secret_hash), client_id)
    return _with_secret(node, client_id, secret, 201)


@router.put("/{client_id}", summary="Change a client's Role", responses=_ERRORS)
async def update_client(request: Request, client_id: str) -> dict[str, str]:
    role = (await _fields(request)).get("role")
    if role is None:
        raise BadRequest("Send Role; rotate a secret with POST .../secret.")
    command = engine.UpdateClient(uuid.uuid4().hex, client_id, role=parse_role(role))
    node = node_of(request)
    await _submit(node, command, client_id)
    return _known_client(node, client_id)


@router.post(
    "/{client_id}/secret",
    summary="New secret {ClientSecret?} (generated if absent); the client's tokens stop working",
    responses=_ERRORS,
)
async def rotate_secret(request: Request, client_id: str) -> Response:
    secret = _secret((await _fields(request, required=False)).get("clientsecret"))
    secret_hash = await asyncio.to_thread(hash_password, secret)
    command = engine.UpdateClient(uuid.uuid4().hex, client_id, secret_hash=secret_hash)
    node = node_of(request)
    await _submit(node, command, client_id)
    return _with_secret(node, client_id, secret, 200)


@router.delete("/{client_id}", summary="Remove a client", status_code=204, responses=_ERRORS)
async def remove_client(request: Request, client_id: str) -> Response:
    await _submit(node_of(request), engine.RemoveClient(uuid.uuid4().hex, client_id), client_id)
    return Response(status_code=204)
