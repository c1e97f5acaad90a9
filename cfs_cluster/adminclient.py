"""What every administrative CLI command shares: which node, which credentials, which
certificate to trust, and error text."""

from __future__ import annotations

import argparse
import getpass
import os
import ssl

import httpx

from .errors import BadRequest

__all__ = ["add_connection_arguments", "connect", "failure", "reason"]


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
        "--cacert",
        default=os.environ.get("CFS_CACERT"),
        help="PEM file of the CA (or the node's own certificate) to verify the node's TLS "
        "certificate with, instead of the system trust store [CFS_CACERT]",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the server's TLS certificate at all",
    )


def connect(args: argparse.Namespace, timeout: float = 15) -> httpx.Client:
    """An HTTP client for ``args.url`` with the administrator's credentials (prompted)."""
    auth = None
    if args.user:
        password = args.password if args.password is not None else getpass.getpass("Password: ")
        auth = httpx.BasicAuth(args.user, password)
    return httpx.Client(auth=auth, timeout=timeout, verify=_verify(args))


def _verify(args: argparse.Namespace) -> ssl.SSLContext | bool:
    if args.insecure:
        return False
    if not args.cacert:
        return True
    try:
        context = ssl.create_default_context(cafile=args.cacert)
    except (OSError, ssl.SSLError) as exc:
        raise BadRequest(
            f"--cacert {args.cacert}: not a readable PEM certificate ({exc})."
        ) from exc
    # A node's own (self-signed or CA-issued) certificate given as --cacert is an anchor too.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def failure(command: str, args: argparse.Namespace, exc: Exception) -> str:
    """One line for a request that got no answer; says what to do about certificates."""
    text = str(exc) or type(exc).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text:
        detail = text.split("] ", 1)[-1].split(" (_ssl", 1)[0]
        given = f" (not vouched for by --cacert {args.cacert})" if args.cacert else ""
        return (
            f"cfs {command}: cannot verify the TLS certificate of {args.url}: {detail}{given}. "
            "Use --cacert FILE (the CA or the node's certificate) or --insecure."
        )
    return f"cfs {command}: cannot reach {args.url}: {text}"


def reason(response: httpx.Response) -> str:
    """The ``Reason`` of an ErrorResponse body, or the start of whatever came back."""
    try:
        return str(response.json().get("Reason", response.text))
    except (ValueError, AttributeError):
        return response.text[:200]
