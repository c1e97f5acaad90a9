"""`cfs clients add|remove|rotate-secret|list` and `cfs identity rotate-key|keys`.

OAuth clients and token signing keys through a node's REST API (administrators only). A secret
is printed once, when it is created; the service keeps only its hash.
"""

from __future__ import annotations

import argparse
from typing import Any

from cfs_cluster.cli.connect import Connection, add_connection_arguments, connection
from cfs_cluster.cli.users import add_account_parser

__all__ = ["add_identity_parsers", "identity_command"]


def add_identity_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _clients_parser(sub)
    p = sub.add_parser("identity", help="token signing keys (administrators only)")
    add_connection_arguments(p)
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser(
        "rotate-key", help="new signing key; the previous one verifies until its tokens expire"
    )
    actions.add_parser("keys", help="list signing key ids and times")


def _clients_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    helps = (
        "manage OAuth clients (administrators only)",
        "create a client; prints its secret once",
        "remove a client; its tokens stop working",
        "list clients and roles",
    )
    actions, add = add_account_parser(sub, "clients", "client_id", helps)
    add.add_argument("--secret", help="use this secret (visible in ps!); default: generated")
    rotate = actions.add_parser("rotate-secret", help="new secret; prints it once")
    rotate.add_argument("client_id")
    rotate.add_argument("--secret", help="use this secret (visible in ps!); default: generated")


def identity_command(args: argparse.Namespace) -> int:
    """Run `cfs clients …` or `cfs identity …`."""
    with connection(args) as conn:
        answer = _call(conn, args)
    _print(args, answer)
    return 0


def _call(conn: Connection, args: argparse.Namespace) -> Any:
    if args.command == "identity":
        keys = "/api/v1/identity/signing-keys"
        if args.action == "rotate-key":
            return conn.call("POST", keys + "/rotate")
        return conn.call("GET", keys)
    base = "/api/v1/clients"
    if args.action == "list":
        return conn.call("GET", base)
    if args.action == "remove":
        return conn.call("DELETE", f"{base}/{args.client_id}")
    body: dict[str, Any] = {} if args.secret is None else {"ClientSecret": args.secret}
    if args.action == "add":
        return conn.call(
            "POST", base, json_body={"ClientId": args.client_id, "Role": args.role, **body}
        )
    return conn.call("POST", f"{base}/{args.client_id}/secret", json_body=body)


def _print(args: argparse.Namespace, answer: Any) -> None:
    if args.command == "identity":
        for key in answer:
            mark = "current" if key["Current"] else f"retired {key['RetiredAt']}"
            print(f"{key['Kid']}\tcreated {key['CreatedAt']}\t{mark}")
    elif args.action == "list":
        for client in answer:
            print(f"{client['ClientId']}\t{client['Role']}")
    elif args.action in ("add", "rotate-secret"):
        body = answer
        # The only time the secret is shown: stdout, so it can be piped into a secret store.
        print(f"ClientId: {body['ClientId']}\nRole: {body['Role']}")
        print(f"ClientSecret: {body['ClientSecret']}")
    else:
        print(f"{args.action}: {args.client_id} ok")
