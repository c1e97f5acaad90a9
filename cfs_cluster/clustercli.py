"""`cfs cluster status|add-node|remove-node|transfer-leader|rotate-member-key` through the REST API.

Any node accepts these; it hands them to the Raft leader, which checks that the change is safe
(see membership.py) before it enters the log.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import httpx

from .adminclient import add_connection_arguments, connect, failure, reason

__all__ = ["add_cluster_parser", "cluster_command"]

MEMBERS = "/api/v1/cluster/members"


def add_cluster_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("cluster", help="cluster status and membership changes (administrators)")
    add_connection_arguments(p)
    actions = p.add_subparsers(dest="action", required=True)
    status = actions.add_parser("status", help="members, leader, indexes and lag")
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    add = actions.add_parser(
        "add-node",
        help="add a running node as a voter (start it first with --peers naming the members)",
    )
    add.add_argument("raft", help="the new node's Raft address, host:port")
    remove = actions.add_parser(
        "remove-node", help="remove a member (refused if the rest could not form a quorum)"
    )
    remove.add_argument("member", help="node id or Raft address")
    transfer = actions.add_parser("transfer-leader", help="hand Raft leadership over")
    transfer.add_argument("--to", help="node id or Raft address (default: most caught-up)")
    actions.add_parser(
        "rotate-member-key",
        help="new key for the members' internal channel (the old one verifies for 60 s)",
    )


def cluster_command(args: argparse.Namespace) -> int:
    base = args.url.rstrip("/")
    with connect(args, timeout=60) as client:
        try:
            response = _call(client, base, args)
        except httpx.HTTPError as exc:
            print(failure("cluster", args, exc), file=sys.stderr)
            return 1
    if response.status_code >= 400:
        print(f"cfs cluster: {response.status_code} {reason(response)}", file=sys.stderr)
        return 1
    body = response.json()
    if args.action == "status":
        print(json.dumps(body, indent=2) if args.json else _status_table(body))
    elif args.action == "rotate-member-key":
        print(f"member key {body.get('Kid')} signs from now on (created {body.get('CreatedAt')})")
    else:
        print(_change_line(body))
        if args.action == "remove-node":
            print("Stop the removed node now, and drop it from every node's --peers.")
        elif args.action == "add-node":
            print("Add the new node to every node's --peers before their next restart.")
    return 0


def _call(client: httpx.Client, base: str, args: argparse.Namespace) -> httpx.Response:
    if args.action == "status":
        return client.get(base + "/api/v1/cluster")
    if args.action == "add-node":
        return client.post(base + MEMBERS, json={"Raft": args.raft})
    if args.action == "remove-node":
        return client.delete(f"{base}{MEMBERS}/{args.member}")
    if args.action == "rotate-member-key":
        return client.post(base + "/api/v1/cluster/member-key/rotate")
    body = {} if args.to is None else {"To": args.to}
    return client.post(base + "/api/v1/cluster/transfer-leader", json=body)


def _change_line(body: dict[str, Any]) -> str:
    line = f"{body.get('Action')} {body.get('Raft')}; voters: {', '.join(body.get('Voters', []))}"
    if body.get("CaughtUp") is False:
        line += " (the new member has not caught up yet: wait before the next change)"
    return line + f"; leader: {body.get('LeaderRaft')}"


def _status_table(body: dict[str, Any]) -> str:
    head = (
        f"node {body.get('NodeId')}  leader {body.get('Leader')}  term {body.get('Term')}  "
        f"commit {body.get('CommitIndex')}  applied {body.get('AppliedIndex')}  "
        f"ready {body.get('Ready')} ({body.get('ReadyReason')})"
    )
    rows = [head, f"{'ID':<10} {'RAFT':<22} {'ROLE':<9} {'REACH':<6} {'MATCH':>8} {'LAG':>6}"]
    for m in body.get("Members", []):
        rows.append(
            f"{m.get('Id') or '-':<10} {m.get('Raft'):<22} {m.get('Role'):<9} "
            f"{'yes' if m.get('Reachable') else 'NO':<6} {_num(m.get('MatchIndex')):>8} "
            f"{_num(m.get('Lag')):>6}"
        )
    return "\n".join(rows)


def _num(value: Any) -> str:
    return "-" if value is None else str(value)
