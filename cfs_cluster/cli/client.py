"""What every administrative CLI command shares: which node, which credentials, error text."""

from __future__ import annotations

import argparse
import getpass
import os

import httpx

__all__ = ["add_connection_arguments", "connect", "reason"]


def add_connection_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url",
        default=os.environ.get("CFS_URL", "http://127.0.0.1:5590"),
        help="any node's API URL [CFS_URL]",
    )
    p.add_argument(
        "--user", default=os.environ.get("CFS_USER"), help="administrator name [CFS_USER]"
    )
    p.add_argument(
        "--password",
        default=os.environ.get("CFS_PASSWORD"),
        help="administrator password [CFS_PASSWORD]; prompted if absent",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the server's TLS certificate (self-signed)",
    )


def connect(args: argparse.Namespace, timeout: float = 15) -> httpx.Client:
    """An HTTP client for ``args.url`` with the administrator's credentials (prompted)."""
    auth = None
    if args.user:
        password = args.password if args.password is not None else getpass.getpass("Password: ")
        auth = httpx.BasicAuth(args.user, password)
    return httpx.Client(auth=auth, timeout=timeout, verify=not args.insecure)


def reason(response: httpx.Response) -> str:
    """The ``Reason`` of an ErrorResponse body, or the start of whatever came back."""
    try:
        return str(response.json().get("Reason", response.text))
    except (ValueError, AttributeError):
        return response.text[:200]
