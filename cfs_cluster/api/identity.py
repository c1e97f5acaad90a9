"""OAuth 2.0 client credentials (spec §8.3): discovery, the token endpoint, signing keys.

- ``GET /identity/.well-known/openid-configuration`` and ``POST /identity/connect/token`` are
  public (auth.required_role): the token endpoint authenticates the client itself, from the form
  (``client_secret_post``) or HTTP Basic (``client_secret_basic``), never both (RFC 6749 §2.3).
- Its errors follow RFC 6749 §5.2 (``{"error": ..., "error_description": ...}``), not the CFS
  ErrorResponse: that is what OAuth client libraries parse.
- Secrets are checked by ``Authenticator.authenticate_client``: the same back-off as passwords
  (per client id and per source), and a dummy hash for an unknown id, so the answer takes as
  long as for a known id and client ids cannot be enumerated by timing.
- ``/api/v1/identity/signing-keys`` (administrators) lists and rotates the replicated keys.
"""

from __future__ import annotations

import base64
import logging
import re
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, unquote_plus

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from cfs_cluster import engine
from cfs_cluster.api.requests import node_of
from cfs_cluster.cluster.node import Node
from cfs_cluster.errors import OAuthError, TooManyRequests, Unauthorized, Unavailable
from cfs_cluster.protocol.bodies import ErrorResponse
from cfs_cluster.security.tokens import TokenService, new_signing_key

__all__ = ["admin_router", "router"]

log = logging.getLogger("cfs.identity")

router = APIRouter(prefix="/identity", tags=["identity"])
admin_router = APIRouter(prefix="/api/v1/identity", tags=["identity"])

DISCOVERY_PATH = "/.well-known/openid-configuration"
TOKEN_PATH = "/connect/token"
GRANT = "client_credentials"
_NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}  # RFC 6749 §5.1
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253})(:\d{1,5})?$")
_MAX_FIELDS = 16


def _tokens(node: Node) -> TokenService:
    assert node.auth.tokens is not None  # wired by create_app
    return node.auth.tokens


def _base_url(request: Request, node: Node) -> str:
    """This node as the caller addressed it: scheme plus the Host header, when it is a sane
    host[:port]; anything else falls back to the configured API URL (no header injection)."""
    host = request.headers.get("host", "")
    if not _HOST.match(host):
        return node.settings.api_url
    return f"{request.url.scheme}://{host}"


# --------------------------------------------------------------------------- discovery


@router.get(
    DISCOVERY_PATH, summary="OpenID-style discovery: where the token endpoint is (spec §8.3)"
)
async def discovery(request: Request) -> JSONResponse:
    base = _base_url(request, node_of(request))
    document = {
        "issuer": f"{base}/identity",
        "token_endpoint": f"{base}/identity{TOKEN_PATH}",
        "grant_types_supported": [GRANT],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "response_types_supported": ["token"],
        "token_endpoint_auth_signing_alg_values_supported": ["HS256"],
        "claims_supported": ["iss", "sub", "role", "iat", "exp"],
    }
    return JSONResponse(document, headers=_NO_STORE)


# --------------------------------------------------------------------------- token

_TOKEN_FORM = {
    "required": True,
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "required": ["grant_type"],
                "properties": {
                    "grant_type": {"type": "string", "enum": [GRANT]},
                    "client_id": {"type": "string"},
                    "client_secret": {"type": "string"},
                    "scope": {"type": "string"},
                },
            }
        }
    },
}
_TOKEN_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": '{"access_token", "token_type": "Bearer", "expires_in"}'},
    400: {"description": '{"error": "invalid_request" | "unsupported_grant_type"}'},
    401: {"description": '{"error": "invalid_client"}'},
    429: {"description": "Too many failed attempts from this address (Retry-After)"},
}


@router.post(
    TOKEN_PATH,
    summary="Client credentials grant: an access token for a ClientId/ClientSecret",
    openapi_extra={"requestBody": _TOKEN_FORM},
    responses=_TOKEN_RESPONSES,
)
async def token(request: Request) -> JSONResponse:
    node = node_of(request)
    source = node.auth.source_of(request.scope.get("client"), request.scope["headers"])
    try:
        body = await _token(request, node, source)
    except OAuthError as exc:
        return _oauth_error(exc)
    return JSONResponse(body, headers=_NO_STORE)


async def _token(request: Request, node: Node, source: str) -> dict[str, Any]:
    form = _form(request.headers.get("content-type", ""), await request.body())
    grant = form.get("grant_type")
    if grant is None:
        raise OAuthError("invalid_request", "grant_type is required.")
    if grant != GRANT:
        raise OAuthError("unsupported_grant_type", f"Only grant_type={GRANT} is supported.")
    client_id, secret = _credentials(request.headers.get("authorization"), form)
    try:
        client = await node.auth.authenticate_client(client_id, secret, source)
    except TooManyRequests as exc:
        node.metrics.observe_auth_failure("backoff")
        raise _too_many(exc) from None
    except Unavailable as exc:  # the re-check of an id this node may not know yet
        error = OAuthError("temporarily_unavailable", exc.reason, 503)
        error.retry_after = exc.retry_after
        raise error from None
    except Unauthorized as exc:
        node.metrics.observe_auth_failure("bad_credentials")
        raise OAuthError("invalid_client", exc.reason, 401) from None
    tokens = _tokens(node)
    key = tokens.signing_key() or await _first_key(node, tokens)
    access_token = tokens.issue(client, f"{_base_url(request, node)}/identity", key)
    log.info("Issued an access token to client '%s' (key %s).", client.client_id, key.kid)
    return {"access_token": access_token, "token_type": "Bearer", "expires_in": tokens.lifetime}


def _form(content_type: str, body: bytes) -> dict[str, str]:
    """The form fields; a field given twice is refused (RFC 6749 §3.2)."""
    if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "Send an application/x-www-form-urlencoded form.")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=_MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError(
            "invalid_request", "The form is malformed or has too many fields."
        ) from None
    repeated = sorted(k for k, v in fields.items() if len(v) > 1)
    if repeated:
        raise OAuthError("invalid_request", f"Parameters given more than once: {repeated}.")
    return {k: v[0] for k, v in fields.items()}


def _credentials(authorization: str | None, form: dict[str, str]) -> tuple[str, str]:
    """(client_id, client_secret) from Basic or the form. Other schemes (say, a stale Bearer an
    HTTP client adds to every request) are ignored, as the endpoint is public."""
    basic = _basic(authorization)
    in_form = "client_secret" in form
    if basic is not None and in_form:
        raise OAuthError("invalid_request", "Authenticate the client one way: Basic or form.")
    if basic is not None:
        form_id = form.get("client_id")
        if form_id is not None and form_id != basic[0]:
            raise OAuthError("invalid_request", "client_id differs from the Basic user name.")
        return basic
    client_id, secret = form.get("client_id"), form.get("client_secret")
    if not client_id or not secret:
        raise OAuthError("invalid_client", "client_id and client_secret are required.", 401)
    return client_id, secret


def _basic(authorization: str | None) -> tuple[str, str] | None:
    """RFC 6749 §2.3.1: the id and secret are form-encoded before Basic encoding."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII text in the header
        raise OAuthError("invalid_client", "The Basic credentials are malformed.", 401) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id:
        raise OAuthError("invalid_client", "The Basic credentials are malformed.", 401)
    return unquote_plus(client_id), unquote_plus(secret)


async def _first_key(node: Node, tokens: TokenService) -> engine.SigningKey:
    """Create the cluster's first signing key; nodes racing here agree on whichever applies
    first (``only_if_none``)."""
    kid, secret = new_signing_key()
    command = engine.RotateSigningKey(
        uuid.uuid4().hex, kid, secret, int(time.time()), tokens.lifetime, only_if_none=True
    )
    await node.submit(command)
    key = tokens.signing_key()
    if key is None:  # rotated away between apply and here: vanishingly rare; the client retries
        raise OAuthError("temporarily_unavailable", "No signing key yet; retry.", 503)
    return key


def _too_many(exc: TooManyRequests) -> OAuthError:
    error = OAuthError("invalid_client", exc.reason, 429)
    error.retry_after = exc.retry_after
    return error


def _oauth_error(exc: OAuthError) -> JSONResponse:
    headers = dict(_NO_STORE)
    if exc.status == 401:
        headers["www-authenticate"] = 'Basic realm="cfs"'
    if exc.retry_after is not None:
        headers["retry-after"] = str(max(1, round(exc.retry_after)))
    body = {"error": exc.code, "error_description": exc.reason}
    return JSONResponse(body, status_code=exc.status, headers=headers)


# --------------------------------------------------------------------------- signing keys

_ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (401, 403, 409, 503)
}


def _key_json(key: engine.SigningKey, current: bool) -> dict[str, Any]:
    return {
        "Kid": key.kid,
        "CreatedAt": key.created_at,
        "RetiredAt": key.retired_at,
        "Current": current,
    }


def _keys(node: Node) -> list[dict[str, Any]]:
    current = _tokens(node).signing_key()
    return [_key_json(k, k is current) for k in node.replicator.state.signing_keys]


@admin_router.get(
    "/signing-keys", summary="Token signing keys (ids and times only)", responses=_ADMIN_ERRORS
)
async def list_keys(request: Request) -> list[dict[str, Any]]:
    return _keys(node_of(request))


@admin_router.post(
    "/signing-keys/rotate",
    summary="New signing key; the previous one verifies until its tokens expire",
    responses=_ADMIN_ERRORS,
)
async def rotate_key(request: Request) -> list[dict[str, Any]]:
    node = node_of(request)
    kid, secret = new_signing_key()
    lifetime = _tokens(node).lifetime
    command = engine.RotateSigningKey(uuid.uuid4().hex, kid, secret, int(time.time()), lifetime)
    await node.submit(command)
    log.info("Token signing key rotated; new key %s.", kid)
    return _keys(node)
