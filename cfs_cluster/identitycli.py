"""`cfs clients add|remove|rotate-secret|list` and `cfs identity rotate-key|keys`.

OAuth clients and token signing keys through a node's REST API (administrators only). A secret
is printed once, when it is created; the service keeps only its hash.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import httpx

from .adminclient import add_connection_arguments, connect, failure, reason

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
    p = sub.add_parser("clients", help="manage OAuth clients (administrators only)")
    add_connection_arguments(p)
    actions = p.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="create a client; prints its secret once")
    add.add_argument("client_id")
    add.add_argument("--role", default="users", help="users (adapters) or administrators")
    add.add_argument("--secret", help="use this secret (visible in ps!); default: generated")
    remove = actions.add_parser("remove", help="remove a client; its tokens stop working")
    remove.add_argument("client_id")
    rotate = actions.add_parser("rotate-secret", help="new secret; prints it once")
    rotate.add_argument("client_id")
    rotate.add_argument("--secret", help="use this secret (visible in ps!); default: generated")
    actions.add_parser("list", help="list clients and roles")


def identity_command(args: argparse.Namespace) -> int:
    """Run `cfs clients …` or `cfs identity …`."""
    with connect(args) as client:
        try:
            response = _call(client, args)
        except httpx.HTTPError as exc:
            print(failure(args.command, args, exc), file=sys.stderr)
            return 1
    if response.status_code >= 400:
        print(f"cfs {args.command}: {response.status_code} {reason(response)}", file=sys.stderr)
        return 1
    _print(args, response)
    return 0


def _call(client: httpx.Client, args: argparse.Namespace) -> httpx.Response:
    root = args.url.rstrip("/")
    if args.command == "identity":
        keys = root + "/api/v1/identity/signing-keys"
        return client.post(keys + "/rotate") if args.action == "rotate-key" else client.get(keys)
    base = root + "/api/v1/clients"
    if args.action == "list":
        return client.get(base)
    if args.action == "remove":
        return client.delete(f"{base}/{args.client_id}")
    body: dict[str, Any] = {} if args.secret is None else {"ClientSecret": args.secret}
    if args.action == "add":
        return client.post(base, json={"ClientId": args.client_id, "Role": args.role, **body})
    return client.post(f"{base}/{args.client_id}/secret", json=body)


def _print(args: argparse.Namespace, response: httpx.Response) -> None:
    if args.command == "identity":
        for key in response.json():
            mark = "current" if key["Current"] else f"retired {key['RetiredAt']}"
            print(f"{key['Kid']}\tcreated {key['CreatedAt']}\t{mark}")
    elif args.action == "list":
        for client in response.json():
            print(f"{client['ClientId']}\t{client['Role']}")
    elif args.action in ("add", "rotate-secret"):
        body = response.json()
        # The only time the secret is shown: stdout, so it can be piped into a secret store.
        print(f"ClientId: {body['ClientId']}\nRole: {body['Role']}")
        print(f"ClientSecret: {body['ClientSecret']}")
    else:
        print(f"{args.action}: {args.client_id} ok")
