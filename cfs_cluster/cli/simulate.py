"""`cfs simulate`: its arguments and the command that runs a simulation and prints the summary."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

from cfs_cluster.cli.connect import (
    CliError,
    Connection,
    Credentials,
    add_connection_arguments,
    credentials,
    refusal,
)
from cfs_cluster.cli.output import progress, progress_done
from cfs_cluster.errors import BadRequest
from cfs_cluster.protocol.wire import TICKS_PER_SECOND, format_timespan, parse_timespan
from cfs_cluster.simulator.report import format_report
from cfs_cluster.simulator.run import run_simulation
from cfs_cluster.simulator.settings import SimulationSettings

ENDPOINT_PATH = "/api/v1/clientfailover"  # appended to a node URL given without a path


def add_simulate_arguments(p: argparse.ArgumentParser) -> None:
    add_connection_arguments(p)  # --url (node or failover endpoint URLs), credentials, TLS
    p.add_argument("--endpoint", dest="url", default=argparse.SUPPRESS, help="same as --url")
    p.add_argument("--groups", type=int, default=1, help="failover groups per mode")
    p.add_argument("--adapters-per-group", type=int, default=2)
    p.add_argument(
        "--mode", default="hot", help="hot|warm|cold, or several comma-separated (run side by side)"
    )
    p.add_argument("--timeout", default="00:00:15", help="FailoverTimeout, hh:mm:ss or seconds")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of data")
    p.add_argument(
        "--fail-primary-after", type=float, default=None, help="seconds; crash primaries"
    )
    p.add_argument("--interval", type=float, default=1.0, help="seconds between values")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--verbose", action="store_true", help="log every role change to stderr")


def simulate_command(args: argparse.Namespace) -> int:
    creds = credentials(args)
    settings = _settings_from_args(args, creds)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    check_registration(settings)
    summary = asyncio.run(_with_progress(run_simulation(settings), settings))
    print(json.dumps(summary, indent=2) if args.json else format_report(summary))
    return 0


def failover_endpoint(url: str) -> str:
    """A node URL (no path) as its failover endpoint; a URL with a path as it is."""
    return url + ENDPOINT_PATH if not urlsplit(url).path.strip("/") else url


def check_registration(settings: SimulationSettings) -> None:
    """Register the first group as its adapters will: a refusal (401, 403, 404) stops the run
    at once (CliError), instead of a run whose adapters never join measuring nothing."""
    first = f"sim-{settings.run_id}-{settings.modes[0]}-g1"
    ticks = round(settings.timeout * TICKS_PER_SECOND)
    body = {"Id": first, "FailoverTimeout": format_timespan(ticks)}
    probe = Credentials(
        settings.endpoints,
        settings.username,
        settings.password,
        settings.ca_file,
        insecure=not settings.verify_tls,
    )
    conn = Connection(probe)
    try:
        response = conn.request("POST", "/groups", json_body=body)
    finally:
        conn.close()
    if response.status_code in (401, 403, 404):
        raise CliError(f"registration refused: {refusal(response, probe)}")


async def _with_progress(
    run: Coroutine[Any, Any, dict[str, Any]], settings: SimulationSettings
) -> dict[str, Any]:
    """``run``, with the elapsed time on the terminal's status line (stderr, tty only)."""
    task = asyncio.ensure_future(run)
    started = time.monotonic()
    expected = settings.timeout / 2 + settings.duration  # staggered start, then the data
    while not task.done():
        progress(f"cfs simulate: {time.monotonic() - started:.0f} s of about {expected:.0f} s")
        await asyncio.wait({task}, timeout=1.0)
    progress_done()
    return task.result()


def _settings_from_args(args: argparse.Namespace, creds: Credentials) -> SimulationSettings:
    try:
        return SimulationSettings(
            endpoints=tuple(failover_endpoint(u) for u in creds.urls),
            groups=args.groups,
            adapters_per_group=args.adapters_per_group,
            modes=tuple(m.strip().lower() for m in args.mode.split(",") if m.strip()),
            timeout=_parse_timeout(args.timeout),
            duration=args.duration,
            fail_primary_after=args.fail_primary_after,
            interval=args.interval,
            username=creds.user,
            password=creds.with_password().password if creds.user else None,
            verify_tls=not creds.insecure,
            ca_file=creds.cacert,
        )
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc


def _parse_timeout(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return parse_timespan(text, "--timeout") / TICKS_PER_SECOND
