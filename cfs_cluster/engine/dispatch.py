"""``apply``: the one entry point that changes the replicated state, and its handler table."""

from __future__ import annotations

from collections.abc import Mapping

from cfs_cluster.engine import accounts, configuration, failover, members
from cfs_cluster.engine.commands import Batch, Code, Command, Handler, Result
from cfs_cluster.engine.failover import Decide, SaveCheckpoint
from cfs_cluster.engine.members import OpenTerm
from cfs_cluster.engine.state import ClusterState

# Applied request ids kept for deduplication; retries come within seconds, this covers hours.
MAX_REMEMBERED_REQUESTS = 50_000

HANDLERS: Mapping[type[Command], Handler] = {
    **failover.HANDLERS,
    **members.HANDLERS,
    **accounts.HANDLERS,
    **configuration.HANDLERS,
}


def apply(state: ClusterState, command: Command) -> Result:
    """Apply one committed command. Total: any unexpected failure becomes an INVALID result."""
    if type(command) is Batch:
        if not isinstance(command.commands, tuple):
            return Result(Code.INVALID, "a Batch without a tuple of commands")
        return Result(Code.OK, items=tuple(_apply_one(state, c) for c in command.commands))
    return _apply_one(state, command)


def _apply_one(state: ClusterState, command: Command) -> Result:
    if type(command) is Batch:  # batches do not nest
        return Result(Code.INVALID, "a Batch inside a Batch")
    # Guarded too: a log entry that is not a Command (no request_id) or has an unhashable
    # request_id would raise AttributeError/TypeError here and wedge every replica.
    try:
        earlier = state.applied.get(command.request_id)
    except Exception as exc:
        return Result(Code.INVALID, f"not a command: {type(exc).__name__}: {exc}")
    if earlier is not None:
        return earlier
    handler = HANDLERS.get(type(command))
    if handler is None:
        result = Result(Code.INVALID, f"unknown command {type(command).__name__}")
    else:
        try:
            result = handler(state, command)
        except Exception as exc:  # an exception here would wedge every replica
            result = Result(Code.INVALID, f"{type(exc).__name__}: {exc}")
    if not isinstance(command, SaveCheckpoint | Decide | OpenTerm):
        _remember(state, command.request_id, result)
    return result


def _remember(state: ClusterState, request_id: str, result: Result) -> None:
    state.applied[request_id] = result
    while len(state.applied) > MAX_REMEMBERED_REQUESTS:
        state.applied.popitem(last=False)
