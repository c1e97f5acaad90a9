"""`/api/v1/users`: the replicated user store (administrators only; enforced by the front door).

Passwords are hashed here, on the receiving node, before the command is replicated: the state
machine only ever sees hashes, and apply stays cheap and deterministic.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from cfs_cluster import engine
from cfs_cluster.api.requests import node_of
from cfs_cluster.cluster.node import Node
from cfs_cluster.errors import BadRequest, NotFound
from cfs_cluster.protocol.bodies import ErrorResponse, load_json
from cfs_cluster.security.passwords import (
    check_password,
    check_user_name,
    hash_password,
    parse_role,
)

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/users", tags=["users"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 503)
}


def _user_json(user: engine.User) -> dict[str, str]:
    return {"Name": user.name, "Role": user.role}


def _fields(body: Any) -> dict[str, Any]:
    """Property names in any casing (spec §2.1)."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return {str(k).lower(): v for k, v in body.items()}


async def _submit(node: Node, command: engine.Command, name: str) -> engine.Result:
    result = await node.submit(command)
    if result.code == engine.Code.USER_NOT_FOUND:
        raise NotFound(f"User '{name}' was not found.")
    return result


@router.get("", summary="List users and their roles", responses=_ERRORS)
async def list_users(request: Request) -> list[dict[str, str]]:
    users = node_of(request).users()
    return [_user_json(u) for u in sorted(users.values(), key=lambda u: u.name)]


@router.get("/{name}", summary="One user", responses=_ERRORS)
async def get_user(request: Request, name: str) -> dict[str, str]:
    user = node_of(request).users().get(name)
    if user is None:
        raise NotFound(f"User '{name}' was not found.")
    return _user_json(user)


@router.post(
    "", summary="Create a user: {Name, Password, Role}", status_code=201, responses=_ERRORS
)
async def add_user(request: Request) -> Response:
    fields = _fields(load_json(await request.body()))
    name = check_user_name(fields.get("name"))
    password = check_password(fields.get("password"))
    role = parse_role(fields.get("role", "users"))
    password_hash = await asyncio.to_thread(hash_password, password)
    command = engine.AddUser(uuid.uuid4().hex, name, role, password_hash)
    await _submit(node_of(request), command, name)
    return JSONResponse({"Name": name, "Role": role}, status_code=201)


@router.put("/{name}", summary="Change a user's Password and/or Role", responses=_ERRORS)
async def update_user(request: Request, name: str) -> dict[str, str]:
    fields = _fields(load_json(await request.body()))
    password = fields.get("password")
    role = fields.get("role")
    if password is None and role is None:
        raise BadRequest("Send Password, Role, or both.")
    password_hash = None
    if password is not None:
        password_hash = await asyncio.to_thread(hash_password, check_password(password))
    command = engine.UpdateUser(
        uuid.uuid4().hex, name, password_hash, None if role is None else parse_role(role)
    )
    node = node_of(request)
    await _submit(node, command, name)
    user = node.users().get(name)
    if user is None:  # removed by a concurrent request
        raise NotFound(f"User '{name}' was not found.")
    return _user_json(user)


@router.delete("/{name}", summary="Remove a user", status_code=204, responses=_ERRORS)
async def remove_user(request: Request, name: str) -> Response:
    await _submit(node_of(request), engine.RemoveUser(uuid.uuid4().hex, name), name)
    return Response(status_code=204)
