"""`cfs users add|remove|passwd|list`: user management through a node's REST API."""

from __future__ import annotations

import argparse
import getpass
from typing import Any

from cfs_cluster.cli.connect import Connection, add_connection_arguments, connection

__all__ = ["add_users_parser", "users_command"]


def add_users_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("users", help="manage API users (administrators only)")
    add_connection_arguments(p)
    actions = p.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="create a user")
    add.add_argument("name")
    add.add_argument("--role", default="users", help="users (adapters) or administrators")
    add.add_argument("--new-password", help="the new user's password; prompted if absent")
    remove = actions.add_parser("remove", help="remove a user")
    remove.add_argument("name")
    passwd = actions.add_parser("passwd", help="change a user's password")
    passwd.add_argument("name")
    passwd.add_argument("--new-password", help="prompted if absent")
    actions.add_parser("list", help="list users and roles")


def users_command(args: argparse.Namespace) -> int:
    with connection(args) as conn:
        answer = _call(conn, "/api/v1/users", args)
    if args.action == "list":
        for user in answer:
            print(f"{user['Name']}\t{user['Role']}")
    else:
        print(f"{args.action}: {args.name} ok")
    return 0


def _call(conn: Connection, base: str, args: argparse.Namespace) -> Any:
    if args.action == "list":
        return conn.call("GET", base)
    if args.action == "remove":
        return conn.call("DELETE", f"{base}/{args.name}")
    new_password = args.new_password or _prompt_new()
    if args.action == "add":
        body: dict[str, Any] = {"Name": args.name, "Password": new_password, "Role": args.role}
        return conn.call("POST", base, json_body=body)
    return conn.call("PUT", f"{base}/{args.name}", json_body={"Password": new_password})


def _prompt_new() -> str:
    first = getpass.getpass("New password: ")
    if first != getpass.getpass("Repeat: "):
        raise SystemExit("cfs users: the passwords differ")
    return first
