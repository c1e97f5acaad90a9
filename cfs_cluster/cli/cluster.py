"""`cfs cluster status|health|add-node|remove-node|transfer-leader|rotate-member-key`.

Any node accepts these; it hands changes to the Raft leader, which checks that the change is
safe (see membership.py) before it enters the log. ``health`` asks every member itself.
"""

from __future__ import annotations

import argparse
from typing import Any

from cfs_cluster.cli.connect import (
    CliError,
    Connection,
    Credentials,
    add_connection_arguments,
    connection,
)
from cfs_cluster.cli.output import add_output_argument, output_format, print_json, print_table

__all__ = ["add_cluster_parser", "cluster_command"]

MEMBERS = "/api/v1/cluster/members"
HEALTH_TIMEOUT = 3.0  # seconds per member: an unreachable member must not stall the report


def add_cluster_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("cluster", help="cluster status, health and membership changes")
    add_connection_arguments(p)
    actions = p.add_subparsers(dest="action", required=True)
    status = _leaf(actions, "status", "members, leader, API URL, TLS, version, indexes and lag")
    status.add_argument(
        "--json", dest="output", action="store_const", const="json", help="= -o json"
    )
    _leaf(actions, "health", "ask every member: reachable, ready, leader, lag, TLS expiry, version")
    add = _leaf(
        actions,
        "add-node",
        "add a running node as a voter (start it first with --peers naming the members)",
    )
    add.add_argument("raft", help="the new node's Raft address, host:port")
    remove = _leaf(
        actions, "remove-node", "remove a member (refused if the rest could not form a quorum)"
    )
    remove.add_argument("member", help="node id or Raft address")
    transfer = _leaf(actions, "transfer-leader", "hand Raft leadership over")
    transfer.add_argument("--to", help="node id or Raft address (default: most caught-up)")
    _leaf(
        actions,
        "rotate-member-key",
        "new key for the members' internal channel (the old one verifies for 60 s)",
    )


def _leaf(
    actions: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str
) -> argparse.ArgumentParser:
    p = actions.add_parser(name, help=text, description=text)
    add_connection_arguments(p)
    add_output_argument(p)
    return p


def cluster_command(args: argparse.Namespace) -> int:
    with connection(args, timeout=60) as conn:
        if args.action == "status":
            return _status(conn, args)
        if args.action == "health":
            return _health(conn, args)
        method, path, request = _change_request(args)
        body = conn.call(method, path, json_body=request)
    if output_format(args) == "json":
        print_json(body)
        return 0
    if args.action == "rotate-member-key":
        print(f"member key {body.get('Kid')} signs from now on (created {body.get('CreatedAt')})")
        return 0
    print(_change_line(body))
    if args.action == "remove-node":
        print("Stop the removed node now, and drop it from every node's --peers.")
    elif args.action == "add-node":
        print("Add the new node to every node's --peers before their next restart.")
    return 0


def _change_request(args: argparse.Namespace) -> tuple[str, str, dict[str, str] | None]:
    if args.action == "add-node":
        return "POST", MEMBERS, {"Raft": args.raft}
    if args.action == "remove-node":
        return "DELETE", f"{MEMBERS}/{args.member}", None
    if args.action == "rotate-member-key":
        return "POST", "/api/v1/cluster/member-key/rotate", None
    return "POST", "/api/v1/cluster/transfer-leader", {} if args.to is None else {"To": args.to}


def _change_line(body: dict[str, Any]) -> str:
    voters = sorted(
        i or r for i, r in zip(body.get("VoterIds", []), body.get("Voters", []), strict=False)
    )
    member = body.get("Id") or body.get("Raft")
    line = f"{body.get('Action')} {member}; voters: {', '.join(voters)}"
    if body.get("CaughtUp") is False:
        line += " (the new member has not caught up yet: wait before the next change)"
    return line + f"; leader: {body.get('Leader') or body.get('LeaderRaft')}"


# --------------------------------------------------------------------------- status


def _status(conn: Connection, args: argparse.Namespace) -> int:
    body = conn.call("GET", "/api/v1/cluster")
    if output_format(args) == "json":
        print_json(body)
        return 0
    print(
        f"node {body.get('NodeId')}  leader {body.get('Leader')}  term {body.get('Term')}  "
        f"commit {body.get('CommitIndex')}  applied {body.get('AppliedIndex')}  "
        f"ready {body.get('Ready')} ({body.get('ReadyReason')})\n"
        f"version {body.get('Version')}  api {body.get('ApiUrl')}  tls {_tls(body.get('Tls'))}"
    )
    rows = [
        [
            m.get("Id"),
            m.get("ApiUrl"),
            m.get("Raft"),
            m.get("Role"),
            "yes" if m.get("Reachable") else "NO",
            m.get("MatchIndex"),
            m.get("Lag"),
        ]
        for m in body.get("Members", [])
    ]
    print_table(("Id", "API URL", "Raft", "Role", "Reach", "Match", "Lag"), rows)
    return 0


def _tls(tls: Any) -> str:
    if not isinstance(tls, dict) or not tls.get("Enabled"):
        return "off"
    if tls.get("NotAfter") is None:
        return f"on ({tls.get('Error', 'certificate unreadable')})"
    return f"on, expires {str(tls['NotAfter'])[:10]} ({tls.get('DaysLeft')} days)"


# --------------------------------------------------------------------------- health


def _health(conn: Connection, args: argparse.Namespace) -> int:
    """Every member asked directly, with the lag from the leader's view; 1 if one is unwell."""
    view = conn.call("GET", "/api/v1/cluster")
    report = [_member_health(m, conn.creds) for m in view.get("Members", [])]
    if output_format(args) == "json":
        print_json(report)
    else:
        rows = [
            [
                m["Id"],
                m["ApiUrl"],
                "yes" if m["Reachable"] else "NO",
                "yes" if m["Ready"] else "NO",
                "yes" if m["Leader"] else "",
                m["Lag"],
                _expiry(m["Tls"]),
                m["Version"] or m["Error"],
            ]
            for m in report
        ]
        print_table(("Id", "API URL", "Reach", "Ready", "Leader", "Lag", "TLS", "Version"), rows)
    return 0 if all(m["Reachable"] and m["Ready"] for m in report) else 1


def _member_health(member: dict[str, Any], creds: Credentials) -> dict[str, Any]:
    health: dict[str, Any] = {
        "Id": member.get("Id"),
        "ApiUrl": member.get("ApiUrl"),
        "Raft": member.get("Raft"),
        "Reachable": False,
        "Ready": False,
        "ReadyReason": None,
        "Leader": member.get("Role") == "leader",
        "Lag": member.get("Lag"),
        "Tls": None,
        "Version": None,
        "Error": None,
    }
    url = member.get("ApiUrl")
    if not url:
        health["Error"] = "no API URL published yet"
        return health
    one = Connection(_only(creds, url), HEALTH_TIMEOUT)
    try:
        ready = one.request("GET", "/readyz")
        health["Reachable"] = True
        answer = _json(ready)
        health["Ready"] = ready.status_code == 200
        health["ReadyReason"] = answer.get("Reason")
        own = one.call("GET", "/api/v1/cluster")
        health["Tls"], health["Version"] = own.get("Tls"), own.get("Version")
    except CliError as exc:
        health["Error"] = str(exc)
    finally:
        one.close()
    return health


def _only(creds: Credentials, url: str) -> Credentials:
    return Credentials((url,), creds.user, creds.password, creds.cacert, creds.insecure)


def _json(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _expiry(tls: Any) -> str:
    if not isinstance(tls, dict):
        return "-"
    if not tls.get("Enabled"):
        return "off"
    return str(tls.get("NotAfter", "?"))[:10]
