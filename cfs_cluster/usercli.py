"""`cfs users add|remove|passwd|list`: user management through a node's REST API."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

import httpx

from .adminclient import add_connection_arguments, connect, failure, reason

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
    base = args.url.rstrip("/") + "/api/v1/users"
    with connect(args) as client:
        try:
            response = _call(client, base, args)
        except httpx.HTTPError as exc:
            print(failure("users", args, exc), file=sys.stderr)
            return 1
    if response.status_code >= 400:
        print(f"cfs users: {response.status_code} {reason(response)}", file=sys.stderr)
        return 1
    if args.action == "list":
        for user in response.json():
            print(f"{user['Name']}\t{user['Role']}")
    else:
        print(f"{args.action}: {args.name} ok")
    return 0


def _call(client: httpx.Client, base: str, args: argparse.Namespace) -> httpx.Response:
    if args.action == "list":
        return client.get(base)
    if args.action == "remove":
        return client.delete(f"{base}/{args.name}")
    new_password = args.new_password or _prompt_new()
    if args.action == "add":
        body: dict[str, Any] = {"Name": args.name, "Password": new_password, "Role": args.role}
        return client.post(base, json=body)
    return client.put(f"{base}/{args.name}", json={"Password": new_password})


def _prompt_new() -> str:
    first = getpass.getpass("New password: ")
    if first != getpass.getpass("Repeat: "):
        raise SystemExit("cfs users: the passwords differ")
    return first
