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


# A member that can apply ``Batch`` entries says so in its published record (members.Member);
# a leader sends batches only once every voter has.
BATCH_FEATURE = "batch"


@dataclass(frozen=True)
class Batch(Command):
    """Commands submitted together, in one Raft entry: applied in order, each exactly as if it
    were an entry of its own (its own handler, term fence and request-id deduplication), with
    one result each in ``Result.items``. One entry instead of many saves the per-entry cost of
    Raft (pickling, encryption, a message per follower, journal framing) when many decisions
    are made at once — a whole plant's adapters starting together."""

    commands: tuple[Command, ...] = ()


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
    items: tuple[Result, ...] = ()  # a Batch's results, one per command


# What a state machine's handler does with one command; ``apply`` dispatches on the type.
Handler = Callable[[Any, Any], Result]
