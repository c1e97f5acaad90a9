"""`cfs users add|remove|passwd|list`: user management through a node's REST API."""

from __future__ import annotations

import argparse
import getpass
from typing import Any

from cfs_cluster.cli.connect import Connection, add_connection_arguments, connection

__all__ = ["add_account_parser", "add_users_parser", "users_command"]


def add_account_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    command: str,
    key: str,
    helps: tuple[str, str, str, str],
) -> tuple[argparse._SubParsersAction[argparse.ArgumentParser], argparse.ArgumentParser]:
    """`cfs users` or `cfs clients`: the connection options and the actions every kind of
    account has (add with a role, remove, list), named by ``key``; ``helps`` are the texts of
    the command, add, remove and list. Returns the actions and the `add` parser."""
    command_help, add_help, remove_help, list_help = helps
    p = sub.add_parser(command, help=command_help)
    add_connection_arguments(p)
    actions = p.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help=add_help)
    add.add_argument(key)
    add.add_argument("--role", default="users", help="users (adapters) or administrators")
    actions.add_parser("remove", help=remove_help).add_argument(key)
    actions.add_parser("list", help=list_help)
    return actions, add


def add_users_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    helps = (
        "manage API users (administrators only)",
        "create a user",
        "remove a user",
        "list users and roles",
    )
    actions, add = add_account_parser(sub, "users", "name", helps)
    add.add_argument("--new-password", help="the new user's password; prompted if absent")
    passwd = actions.add_parser("passwd", help="change a user's password")
    passwd.add_argument("name")
    passwd.add_argument("--new-password", help="prompted if absent")


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
