"""`cfs groups|sessions|override|events|watch`: the failover domain from the command line.

Every command talks to any node (docs/operations.md "The failover domain from the command
line"): reads are answered from the node's replicated state, changes are handed to the leader.
``--output json`` prints the API's own objects (docs/api.md), ``table`` (the default) a narrow
table. Exit status: 0 done, 1 refused or unreachable, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from cfs_cluster.cli.connect import CliError, Connection, add_connection_arguments, connection
from cfs_cluster.cli.output import (
    add_output_argument,
    output_format,
    print_json,
    print_table,
    table,
)
from cfs_cluster.errors import BadRequest
from cfs_cluster.protocol.wire import (
    ClientRole,
    format_timespan,
    parse_datetime,
    parse_timespan,
    unix_from_ticks,
)

__all__ = ["DOMAIN_COMMANDS", "add_domain_parsers", "domain_command"]

DOMAIN_COMMANDS = ("groups", "sessions", "override", "events", "watch")
ROOT = "/api/v1/clientfailover/groups"
PAGE = 1000
EVENTS_WAIT = 25  # seconds one events long-poll is held (below common proxy timeouts)
GROUP_COLUMNS = ("Id", "Timeout", "Sessions", "Primary", "Pending", "Epoch", "LastData")
SESSION_COLUMNS = ("Id", "Role", "Score", "Heartbeat", "Override")
EVENT_COLUMNS = ("Time", "Epoch", "Primary", "Pending", "Reason")

if TYPE_CHECKING:
    Parsers = argparse._SubParsersAction[argparse.ArgumentParser]


# --------------------------------------------------------------------------- parsers


def add_domain_parsers(sub: Parsers) -> None:
    _groups_parser(sub)
    sessions = _leaf(sub, "sessions", "client sessions of a group")
    actions = sessions.add_subparsers(dest="action", required=True)
    delete = _leaf(actions, "delete", "unregister a session; roles are re-evaluated at once")
    delete.add_argument("group")
    delete.add_argument("session")
    _override_parser(sub)
    events = _leaf(sub, "events", "a group's role decisions with their reasons")
    events.add_argument("group")
    events.add_argument("--follow", "-f", action="store_true", help="stream new decisions")
    events.add_argument("--count", type=int, default=None, help=argparse.SUPPRESS)
    watch = _leaf(sub, "watch", "a live table of the groups (or one group) until Ctrl-C")
    watch.add_argument("group", nargs="?")
    watch.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    watch.add_argument("--count", type=int, default=None, help=argparse.SUPPRESS)


def _groups_parser(sub: Parsers) -> None:
    groups = _leaf(sub, "groups", "failover groups: list, show, create, delete")
    actions = groups.add_subparsers(dest="action", required=True)
    _leaf(actions, "list", "every group with its Primary, PendingPrimary and Epoch")
    show = _leaf(actions, "show", "one group and its sessions")
    show.add_argument("group")
    create = _leaf(actions, "create", "create a group (200 if it exists with this timeout)")
    create.add_argument("group")
    create.add_argument("--timeout", required=True, help="FailoverTimeout, HH:MM:SS")
    create.add_argument("--name", default=None)
    create.add_argument("--description", default=None)
    delete = _leaf(actions, "delete", "delete a group without sessions (administrators)")
    delete.add_argument("group")


def _override_parser(sub: Parsers) -> None:
    override = _leaf(sub, "override", "force a session to Primary, or cancel (administrators)")
    actions = override.add_subparsers(dest="action", required=True)
    put = _leaf(actions, "set", "make SESSION the group's Primary (after the holder releases)")
    put.add_argument("group")
    put.add_argument("session")
    put.add_argument("--for", dest="period", default=None, help="HH:MM:SS; default: no expiry")
    clear = _leaf(actions, "clear", "cancel the override; the normal rules decide again")
    clear.add_argument("group")
    clear.add_argument("session")


def _leaf(sub: Parsers, name: str, text: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=text, description=text)
    add_connection_arguments(p)
    add_output_argument(p)
    return p


# --------------------------------------------------------------------------- dispatch


def domain_command(args: argparse.Namespace) -> int:
    with connection(args) as conn:
        if args.command == "groups":
            _groups(conn, args)
        elif args.command == "sessions":
            conn.call("DELETE", _session_path(args.group, args.session))
            _done(args, f"deleted session {args.session} of group {args.group}")
        elif args.command == "override":
            _override(conn, args)
        else:
            try:
                _events(conn, args) if args.command == "events" else _watch(conn, args)
            except KeyboardInterrupt:  # how a live view or a follow is meant to end
                return 0
    return 0


def _groups(conn: Connection, args: argparse.Namespace) -> None:
    json_out = output_format(args) == "json"
    if args.action == "list":
        groups = list_groups(conn)
        print_json(groups) if json_out else print_table(GROUP_COLUMNS, _group_rows(groups))
    elif args.action == "show":
        group = show_group(conn, args.group)
        print_json(group) if json_out else Console().print(_group_view(group, time.time()))
    elif args.action == "create":
        ticks = _timespan(args.timeout, "--timeout")
        body = {"Id": args.group, "FailoverTimeout": format_timespan(ticks)}
        body |= {k: v for k, v in (("Name", args.name), ("Description", args.description)) if v}
        created = conn.call("POST", ROOT, json_body=body)
        text = f"group {args.group} ready (FailoverTimeout {created['FailoverTimeout']})"
        print_json(created) if json_out else print(text)
    else:
        conn.call("DELETE", f"{ROOT}/{_q(args.group)}")
        _done(args, f"deleted group {args.group}")


def _override(conn: Connection, args: argparse.Namespace) -> None:
    body: dict[str, Any] = {"Value": "Primary" if args.action == "set" else "Off"}
    if args.action == "set" and args.period is not None:
        body["ExpirationPeriod"] = format_timespan(_timespan(args.period, "--for"))
    answer = conn.call(
        "POST", _session_path(args.group, args.session) + "/roleoverride", json_body=body
    )
    if output_format(args) == "json":
        print_json(answer)
        return
    if args.action == "clear":
        print(f"override of {args.session} in {args.group} cleared")
        return
    until = answer.get("RoleOverrideExpirationTime") or "cleared"
    session = conn.call("GET", _session_path(args.group, args.session))
    role = ClientRole(session["Role"]).name
    print(f"override: {args.session} is {role} in {args.group} (override until {until})")
    if role == ClientRole.PendingPrimary.name:
        print("It becomes Primary once the current Primary is answered Secondary or expires.")


def _done(args: argparse.Namespace, text: str) -> None:
    print_json({"Result": "deleted"}) if output_format(args) == "json" else print(text)


# --------------------------------------------------------------------------- reads


def list_groups(conn: Connection) -> list[dict[str, Any]]:
    """Every group (paged), each with its ``Status`` and its number of ``Sessions``."""
    groups: list[dict[str, Any]] = []
    while True:
        page = conn.call("GET", ROOT, params={"skip": str(len(groups)), "count": str(PAGE)})
        for group in page:
            path = f"{ROOT}/{_q(group['Id'])}"
            group["Status"] = conn.call("GET", path + "/status")
            group["Sessions"] = len(conn.call("GET", path + "/clientsessions"))
        groups.extend(page)
        if len(page) < PAGE:
            return groups


def show_group(conn: Connection, group_id: str) -> dict[str, Any]:
    """The group with its ``Status`` and its ``Sessions`` (the session objects)."""
    path = f"{ROOT}/{_q(group_id)}"
    group: dict[str, Any] = conn.call("GET", path)
    group["Status"] = conn.call("GET", path + "/status")
    group["Sessions"] = conn.call("GET", path + "/clientsessions")
    return group


def _group_rows(groups: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            g["Id"],
            g["FailoverTimeout"],
            g["Sessions"],
            g["Status"]["Primary"],
            g["Status"]["PendingPrimary"],
            g["Status"]["Epoch"],
            _short_time(g["Status"]["LastDataProcessedTime"]),
        ]
        for g in groups
    ]


def _group_view(group: dict[str, Any], now: float) -> Group:
    status = group["Status"]
    head = Text(
        f"group {group['Id']}  timeout {group['FailoverTimeout']}  "
        f"primary {status['Primary'] or '-'}  pending {status['PendingPrimary'] or '-'}  "
        f"epoch {status['Epoch']}  last data {_short_time(status['LastDataProcessedTime'])}"
    )
    rows = [_session_row(s, now) for s in group["Sessions"]]
    return Group(head, table(SESSION_COLUMNS, rows))


def _session_row(session: dict[str, Any], now: float) -> list[Any]:
    beat = session.get("Heartbeat") or {}
    age = _age(beat.get("HeartbeatTime"), now)
    override = "-"
    if session.get("RoleOverride"):
        until = session.get("RoleOverrideExpirationTime")
        override = f"until {_short_time(until)}" if until else "Primary"
    return [
        session["Id"],
        ClientRole(session["Role"]).name,
        beat.get("FailoverScore"),
        "never" if age is None else f"{age:.1f} s ago",
        override,
    ]


# --------------------------------------------------------------------------- events


def _events(conn: Connection, args: argparse.Namespace) -> None:
    json_out = output_format(args) == "json"
    path = f"{ROOT}/{_q(args.group)}/events"
    history: list[dict[str, Any]] = conn.call("GET", path)
    if not args.follow:
        print_json(history) if json_out else print_table(EVENT_COLUMNS, _event_rows(history))
        return
    # Following: one event per line (JSON lines, or table rows as they come), until Ctrl-C.
    console = Console(soft_wrap=False)
    header = not json_out
    for events in _follow(conn, path, history, args.count):
        if json_out:
            for event in events:
                print(json.dumps(event), flush=True)
        else:
            grid = table(EVENT_COLUMNS, _event_rows(events))
            grid.show_header = header
            header = False
            console.print(grid)


def _follow(
    conn: Connection, path: str, history: list[dict[str, Any]], limit: int | None
) -> Iterator[list[dict[str, Any]]]:
    """The history, then each batch of new events from the long-poll (``limit``: new events
    after which to stop, for scripts and tests)."""
    yield history
    after = max((e.get("Sequence", 0) for e in history), default=0)
    seen = 0
    while limit is None or seen < limit:
        params = {"after": str(after), "waitFor": str(EVENTS_WAIT)}
        events: list[dict[str, Any]] = conn.call(
            "GET", path, params=params, timeout=EVENTS_WAIT + 10
        )
        if not events:
            continue
        if limit is not None:
            events = events[: limit - seen]
        seen += len(events)
        after = max(after, *(e.get("Sequence", 0) for e in events))
        yield events


def _event_rows(events: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            _short_time(e["Time"]),
            e["Epoch"],
            f"{e['OldPrimary'] or '-'} -> {e['NewPrimary'] or '-'}",
            e["PendingPrimary"],
            e["Reason"],
        ]
        for e in events
    ]


# --------------------------------------------------------------------------- watch


def _watch(conn: Connection, args: argparse.Namespace) -> None:
    """Poll every ``--interval``; show the view again when it changed. A terminal gets a live
    table in place; a pipe gets one table (or JSON line) per change."""
    if not args.interval > 0:
        raise CliError("--interval must be a positive number of seconds", 2)

    def read() -> Any:
        return show_group(conn, args.group) if args.group else list_groups(conn)

    def render(view: Any) -> Any:
        if args.group:
            return _group_view(view, time.time())
        return table(GROUP_COLUMNS, _group_rows(view))

    console = Console(soft_wrap=False)
    if console.is_terminal and output_format(args) == "table":
        with Live(render(read()), console=console, auto_refresh=False) as live:
            for view in _changes(read, args.interval, args.count):
                live.update(render(view), refresh=True)
        return
    for view in _changes(read, args.interval, args.count):
        if output_format(args) == "json":
            print(json.dumps(view), flush=True)
        else:
            console.print(render(view))
            console.print()


def _changes(read: Callable[[], Any], interval: float, limit: int | None) -> Iterator[Any]:
    """The first view, then each one that differs from the one before (``limit`` views)."""
    last: Any = None
    shown = 0
    while limit is None or shown < limit:
        view = read()
        if view != last:
            last = view
            shown += 1
            yield view
        if limit is None or shown < limit:
            time.sleep(interval)  # the poll period of a live view, not a synchronisation


# --------------------------------------------------------------------------- helpers


def _session_path(group: str, session: str) -> str:
    return f"{ROOT}/{_q(group)}/clientsessions/{_q(session)}"


def _q(value: str) -> str:
    return quote(value, safe="")


def _timespan(text: str, option: str) -> int:
    try:
        return parse_timespan(text, option)
    except BadRequest as exc:
        raise CliError(exc.reason, 2) from exc


def _short_time(text: str | None) -> str:
    """``2026-11-23T11:06:08.3952946Z`` as ``2026-11-23 11:06:08``; "-" for none/MinValue."""
    if not text or text.startswith("0001-01-01"):
        return "-"
    return text[:19].replace("T", " ")


def _age(text: str | None, now: float) -> float | None:
    if not text:
        return None
    try:
        return max(0.0, now - unix_from_ticks(parse_datetime(text, "HeartbeatTime")))
    except BadRequest:
        return None
