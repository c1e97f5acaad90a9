"""The base of every replicated command and the result ``apply`` returns for it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cfs_cluster.engine.upgradable import Upgradable


@dataclass(frozen=True)
class Command(Upgradable):
    request_id: str


class Code(StrEnum):
    CREATED = "created"
    OK = "ok"
    DELETED = "deleted"
    GROUP_NOT_FOUND = "group_not_found"
    SESSION_NOT_FOUND = "session_not_found"
    CONFLICT = "conflict"
    STALE = "stale"
    INVALID = "invalid"
    USER_NOT_FOUND = "user_not_found"
    CLIENT_NOT_FOUND = "client_not_found"
    ENDPOINT_NOT_FOUND = "endpoint_not_found"


@dataclass(frozen=True)
class Result:
    code: Code
    detail: str = ""
    epoch: int = 0
    expiry: int | None = None


# What a state machine's handler does with one command; ``apply`` dispatches on the type.
Handler = Callable[[Any, Any], Result]
