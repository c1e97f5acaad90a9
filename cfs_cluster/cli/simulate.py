"""`cfs simulate`: its arguments and the command that runs a simulation and prints the summary."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from cfs_cluster.errors import BadRequest
from cfs_cluster.protocol.wire import TICKS_PER_SECOND, parse_timespan
from cfs_cluster.simulator.report import format_report
from cfs_cluster.simulator.run import run_simulation
from cfs_cluster.simulator.settings import SimulationSettings


def add_simulate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint", required=True, help="failover endpoint URL(s), comma-separated")
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
    p.add_argument("--username", default=None)
    p.add_argument("--password", default=None)
    p.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--verbose", action="store_true", help="log every role change to stderr")


def simulate_command(args: argparse.Namespace) -> int:
    settings = _settings_from_args(args)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    summary = asyncio.run(run_simulation(settings))
    print(json.dumps(summary, indent=2) if args.json else format_report(summary))
    return 0


def _settings_from_args(args: argparse.Namespace) -> SimulationSettings:
    endpoints = tuple(e.strip() for e in args.endpoint.split(",") if e.strip())
    try:
        return SimulationSettings(
            endpoints=endpoints,
            groups=args.groups,
            adapters_per_group=args.adapters_per_group,
            modes=tuple(m.strip().lower() for m in args.mode.split(",") if m.strip()),
            timeout=_parse_timeout(args.timeout),
            duration=args.duration,
            fail_primary_after=args.fail_primary_after,
            interval=args.interval,
            username=args.username,
            password=args.password,
            verify_tls=not args.insecure,
        )
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc


def _parse_timeout(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return parse_timespan(text, "--timeout") / TICKS_PER_SECOND
