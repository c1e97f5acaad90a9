"""JSON bodies both kinds of CFS server share: bounded decoding and the ErrorResponse schema (spec §2.1)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from cfs_cluster.errors import BadRequest

__all__ = ["MAX_JSON_DEPTH", "ErrorResponse", "load_json"]

MAX_JSON_DEPTH = 32


def load_json(body: bytes) -> Any:
    """Decode a JSON body; malformed or absurdly nested input is a BadRequest."""
    if not body.strip():
        raise BadRequest("The request body is empty; a JSON object is required.")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"The request body is not valid JSON: {str(exc)[:120]}") from exc
    if _depth(value) > MAX_JSON_DEPTH:
        raise BadRequest(f"The request body nests deeper than {MAX_JSON_DEPTH} levels.")
    return value


def _depth(value: Any) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        if depth > MAX_JSON_DEPTH:
            return depth
        nxt: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                nxt.extend(item.values())
            elif isinstance(item, list):
                nxt.extend(item)
        level = nxt
    return depth


class ErrorResponse(BaseModel):
    OperationId: str
    Error: str
    Reason: str
    Resolution: str
    AdditionalParameters: dict[str, str] | None = None
