"""How every `cfs` command that talks to a node finds it, proves who it is, and says what failed.

One way to give credentials, for every such command (docs/operations.md "Credentials"):

    --url URL[,URL…]   [CFS_URL]       nodes tried in order; the first that answers is used
    --user NAME        [CFS_USER]
    --password TEXT    [CFS_PASSWORD]  prompted on a terminal when a user is given without one
    --cacert FILE      [CFS_CACERT]    CA bundle (or a node's own certificate) to verify HTTPS
    --insecure                         do not verify the node's certificate

A command-line option wins over its environment variable, which wins over the profile file
(``$CFS_CONFIG``, else ``$XDG_CONFIG_HOME/cfs/cli.toml``, else ``~/.config/cfs/cli.toml``:
keys ``url``, ``user``, ``password``, ``cacert``, ``insecure``). Like ``.pgpass``, a password in
a profile that other users can read is ignored.

Every failure becomes a ``CliError``: one line on stderr naming what to do, exit status 1 for a
refusal or an unreachable node, 2 for a usage mistake; never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import ssl
import stat
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, Unpack

import httpx

from cfs_cluster.cli.output import progress, progress_done
from cfs_cluster.settings import env

__all__ = [
    "DEFAULT_URL",
    "CliError",
    "Connection",
    "Credentials",
    "add_connection_arguments",
    "connection",
    "credentials",
    "load_profile",
    "node_urls",
    "profile_path",
    "reason",
    "refusal",
    "transport_problem",
]

DEFAULT_URL = "http://127.0.0.1:5590"
USAGE = 2  # exit status of a usage mistake, as argparse's own
REFUSED = 1  # exit status of a refusal, a failure or an unreachable node
_PROFILE_KEYS = ("url", "user", "password", "cacert", "insecure")


class CliError(Exception):
    """A failure reported as one line on stderr, with ``exit_code`` as the command's status."""

    def __init__(self, message: str, exit_code: int = REFUSED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --------------------------------------------------------------------------- options


def add_connection_arguments(p: argparse.ArgumentParser) -> None:
    """The connection options. Their defaults are resolved by ``credentials`` (so a group
    parser and its subcommands can both carry them: ``cfs users --url X list`` and
    ``cfs groups list --url X`` both work)."""
    keep = argparse.SUPPRESS
    p.add_argument(
        "--url", default=keep, help=f"node API URL(s), comma-separated [CFS_URL; {DEFAULT_URL}]"
    )
    p.add_argument("--user", default=keep, help="user name [CFS_USER]")
    p.add_argument("--username", dest="user", default=keep, help=argparse.SUPPRESS)
    p.add_argument("--password", default=keep, help="password [CFS_PASSWORD]; prompted if absent")
    p.add_argument(
        "--cacert", default=keep, help="CA or node certificate (PEM) to verify HTTPS [CFS_CACERT]"
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        default=keep,
        help="do not verify the node's TLS certificate",
    )


# --------------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class Credentials:
    urls: tuple[str, ...]
    user: str | None
    password: str | None
    cacert: str | None
    insecure: bool

    def verify(self) -> ssl.SSLContext | bool:
        if self.insecure:
            return False
        if self.cacert is None:
            return True
        try:
            context = ssl.create_default_context(cafile=self.cacert)
        except (OSError, ssl.SSLError) as exc:
            raise CliError(f"cannot use --cacert {self.cacert}: {_strerror(exc)}", USAGE) from exc
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a node's own certificate will do
        return context

    def with_password(self) -> Credentials:
        """These credentials, with the password prompted for on a terminal if it is missing."""
        if not self.user or self.password is not None:
            return self
        if not sys.stdin.isatty():
            raise CliError(
                f"no password for user '{self.user}': give --password or CFS_PASSWORD", USAGE
            )
        password = getpass.getpass(f"Password for {self.user}: ")
        return Credentials(self.urls, self.user, password, self.cacert, self.insecure)

    def auth(self) -> httpx.BasicAuth | None:
        if not self.user:
            return None
        return httpx.BasicAuth(self.user, self.password or "")


def credentials(args: argparse.Namespace) -> Credentials:
    """Command line, then environment, then the profile file, then the defaults."""
    profile = load_profile(profile_path())

    def pick(name: str, variable: str) -> str | None:
        value = getattr(args, name, None)
        if value is None:
            value = env(variable) or None
        if value is None:
            value = profile.get(name)
        return value

    insecure = bool(getattr(args, "insecure", False)) or profile.get("insecure") == "true"
    return Credentials(
        urls=node_urls(pick("url", "CFS_URL") or DEFAULT_URL),
        user=pick("user", "CFS_USER"),
        password=pick("password", "CFS_PASSWORD"),
        cacert=pick("cacert", "CFS_CACERT"),
        insecure=insecure,
    )


def node_urls(text: str) -> tuple[str, ...]:
    """``a,b,c`` as a tuple of base URLs; a URL that is not http(s) is a usage mistake."""
    urls = tuple(u.strip().rstrip("/") for u in text.split(",") if u.strip())
    if not urls:
        raise CliError("--url (CFS_URL) names no node", USAGE)
    for url in urls:
        if not url.lower().startswith(("http://", "https://")):
            raise CliError(f"'{url}' is not an http:// or https:// URL (--url, CFS_URL)", USAGE)
    return urls


def profile_path() -> Path:
    explicit = env("CFS_CONFIG")
    if explicit:
        return Path(explicit)
    base = env("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "cfs" / "cli.toml"


def load_profile(path: Path) -> dict[str, str]:
    """The profile's settings as strings; {} when there is no file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CliError(f"cannot read the profile {path}: {_strerror(exc)}", USAGE) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"the profile {path} is not valid TOML: {exc}", USAGE) from exc
    unknown = sorted(set(data) - set(_PROFILE_KEYS))
    if unknown:
        raise CliError(
            f"the profile {path} has unknown keys {', '.join(unknown)} "
            f"(known: {', '.join(_PROFILE_KEYS)})",
            USAGE,
        )
    profile = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in data.items()}
    if "password" in profile and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(
            f"cfs: ignoring the password in {path}: other users can read it (chmod 600 {path})",
            file=sys.stderr,
        )
        del profile["password"]
    return profile


# --------------------------------------------------------------------------- requests


class RequestOptions(TypedDict, total=False):
    """What ``Connection.request`` takes besides method and path."""

    json_body: Any
    params: dict[str, str] | None
    timeout: float | None


class Connection:
    """HTTP to the first node of ``urls`` that answers; it sticks to that node afterwards."""

    def __init__(self, creds: Credentials, timeout: float = 15) -> None:
        self.creds = creds = creds.with_password()
        self._client = httpx.Client(auth=creds.auth(), timeout=timeout, verify=creds.verify())
        self._order = list(creds.urls)

    @property
    def url(self) -> str:
        """The node answering now (the first one before any request)."""
        return self._order[0]

    def close(self) -> None:
        self._client.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """The first answer other than 503 (or the last 503); CliError if no node answers."""
        failures: list[str] = []
        last_503: httpx.Response | None = None
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        for url in list(self._order):
            try:
                response = self._client.request(
                    method, url + path, json=json_body, params=params, **extra
                )
            except httpx.HTTPError as exc:
                failures.append(transport_problem(url, exc, self.creds))
                continue
            self._prefer(url)
            if response.status_code != 503:
                return response
            last_503 = response
        if last_503 is not None:
            return last_503
        raise CliError("; ".join(failures))

    def call(self, method: str, path: str, **options: Unpack[RequestOptions]) -> Any:
        """``request``, then the JSON body of a success (None when empty); CliError otherwise."""
        response = self.request(method, path, **options)
        if response.status_code >= 400:
            raise CliError(refusal(response, self.creds))
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise CliError(
                f"{response.url} answered {response.status_code} with a body that is not JSON: "
                "is --url a cfs node?"
            ) from exc

    def download(self, path: str, label: str) -> bytes:
        """GET a large body, showing the bytes received on a terminal (stderr)."""
        failures: list[str] = []
        for url in list(self._order):
            try:
                with self._client.stream("GET", url + path) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise CliError(refusal(response, self.creds))
                    body = _read_with_progress(response, label)
            except httpx.HTTPError as exc:
                failures.append(transport_problem(url, exc, self.creds))
                continue
            finally:
                progress_done()
            self._prefer(url)
            return body
        raise CliError("; ".join(failures))

    def _prefer(self, url: str) -> None:
        self._order.remove(url)
        self._order.insert(0, url)


def _read_with_progress(response: httpx.Response, label: str) -> bytes:
    total = int(response.headers.get("content-length") or 0)
    chunks: list[bytes] = []
    received = 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        received += len(chunk)
        progress(f"{label}: {received:,} bytes" + (f" of {total:,}" if total else ""))
    return b"".join(chunks)


@contextmanager
def connection(args: argparse.Namespace, timeout: float = 15) -> Iterator[Connection]:
    conn = Connection(credentials(args), timeout)
    try:
        yield conn
    finally:
        conn.close()


def transport_problem(url: str, exc: httpx.HTTPError, creds: Credentials) -> str:
    """What went wrong below HTTP, and what to try."""
    text = _innermost(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        hint = (
            f"--cacert {creds.cacert} does not verify it"
            if creds.cacert
            else "give its CA or certificate with --cacert FILE (CFS_CACERT), or --insecure"
        )
        return f"TLS verification of {url} failed ({text}): {hint}"
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text:
        return f"{url} does not speak TLS ({text}): use http:// for this node"
    if isinstance(exc, httpx.RemoteProtocolError) and url.lower().startswith("http://"):
        return f"{url} closed the connection ({text}): if the node serves HTTPS, use https://"
    if isinstance(exc, httpx.TimeoutException):
        return f"{url} did not answer in time ({type(exc).__name__}): is the node overloaded?"
    return f"cannot reach {url} ({text}): is the node running, and is --url (CFS_URL) right?"


def refusal(response: httpx.Response, creds: Credentials) -> str:
    """One line for an HTTP error answer: status, the node's reason, and what to do."""
    status, why = response.status_code, reason(response)
    where = str(response.request.url.copy_with(query=None))
    if status == 401:
        if "no users yet" in why:
            return f"401 {why}"
        if not creds.user:
            return f"401 {why} Give --user and --password (or CFS_USER and CFS_PASSWORD)."
        return f"401 {why} (user '{creds.user}' at {where}): check --user/--password."
    if status == 403:
        return f"403 {why} Use an account of the role this command needs (--user)."
    if status == 404 and "No resource exists at this path" in why:
        return f"404 {where} does not exist: is --url a node's base URL (no path)?"
    return f"{status} {why}"


def reason(response: httpx.Response) -> str:
    """The ``Reason`` of an ErrorResponse body, or the start of whatever came back."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    why = body.get("Reason") if isinstance(body, dict) else None
    return why if isinstance(why, str) else response.text[:200]


def _innermost(exc: BaseException) -> str:
    """The deepest cause's message: httpx wraps ssl and socket errors."""
    seen: BaseException = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    if isinstance(seen, ssl.SSLError) and seen.reason:
        detail = getattr(seen, "verify_message", None)
        text = f"{seen.reason}: {detail}" if detail else str(seen.reason)
        return (
            text
            if "CERTIFICATE_VERIFY_FAILED" not in text
            else f"certificate verify failed: {detail}"
        )
    return str(seen) or type(seen).__name__


def _strerror(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)
