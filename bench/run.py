"""Entry point of `make bench`: run the selected items, write bench/results/<UTC>.json, regenerate
docs/benchmarks.md.

    python -m bench                       # everything (see docs/benchmarks.md for the time)
    python -m bench throughput failover   # selected items (BENCH="..." in make)
    python -m bench costmodel --sessions 1000,5000,20000 --nodes 3   # a short cost model
    python -m bench --report-only         # rebuild docs/benchmarks.md from the newest results
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import context, report, scenarios

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# 2: issue 16, the production configuration (earlier results measured `serve --dev`, no auth,
# and are not merged into a report of this format).
FORMAT = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument(
        "items", nargs="*", help=f"any of {', '.join(scenarios.ITEMS)} (default: all)"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load run")
    parser.add_argument(
        "--groups", type=int, default=2500, help="groups × 2 sessions for throughput"
    )
    parser.add_argument("--no-dev", action="store_true", help="skip the --dev column")
    parser.add_argument(
        "--capacity-groups", type=int, default=10_000, help="groups × 2 sessions at T = 15 s"
    )
    parser.add_argument(
        "--capacity-seconds", type=float, default=30.0, help="measured window (after T/2)"
    )
    parser.add_argument(
        "--capacity-connections",
        type=int,
        default=128,
        help="open-loop connections of the capacity client (adapters hold one each)",
    )
    parser.add_argument(
        "--no-stretch", action="store_true", help="skip 100,000 sessions at T = 60 s"
    )
    parser.add_argument("--trials", type=int, default=24, help="failover trials (≥ 20)")
    parser.add_argument(
        "--sessions",
        type=_ints,
        default=context.COST_SESSIONS,
        help="cost model: session counts at the fixed rate (comma-separated)",
    )
    parser.add_argument(
        "--rates",
        type=_ints,
        default=context.COST_RATES,
        help="cost model: heartbeat rates at the fixed session count (comma-separated)",
    )
    parser.add_argument("--rate", type=int, default=500, help="cost model: the fixed rate")
    parser.add_argument(
        "--fixed-sessions", type=int, default=5000, help="cost model: the fixed session count"
    )
    parser.add_argument(
        "--nodes", type=_ints, default=(3, 5), help="cost model: cluster sizes (comma-separated)"
    )
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    if args.report_only:
        report.write(latest_results())
        return 0
    items = args.items or list(scenarios.ITEMS)
    unknown = [i for i in items if i not in scenarios.ITEMS]
    if unknown:
        parser.error(f"unknown items {unknown}; choose from {list(scenarios.ITEMS)}")
    missing = [tool for tool in ("wrk", "etcd") if shutil.which(tool) is None]
    if missing:
        parser.error(f"missing {missing}: apt-get install -y wrk etcd-server (make bench does it)")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    data: dict[str, Any] = {
        "format": FORMAT,
        "timestamp": stamp,
        "machine": machine(),
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "items": {},
    }
    path = RESULTS / f"{stamp}.json"
    with tempfile.TemporaryDirectory(prefix="cfs-bench-") as work:
        ctx = context.Context(
            work=Path(work),
            results=RESULTS,
            duration=args.duration,
            groups=args.groups,
            capacity_groups=args.capacity_groups,
            capacity_seconds=args.capacity_seconds,
            capacity_connections=args.capacity_connections,
            stretch=not args.no_stretch,
            trials=args.trials,
            dev=not args.no_dev,
            cost_sessions=args.sessions,
            cost_rates=args.rates,
            cost_rate=args.rate,
            cost_fixed_sessions=args.fixed_sessions,
            cost_nodes=args.nodes,
        )
        for item in items:
            started = time.monotonic()
            print(f"bench: {item} ...", flush=True)
            try:
                data["items"][item] = scenarios.ITEMS[item](ctx)
            except Exception as exc:  # one broken item must not lose the others' numbers
                data["items"][item] = {"error": f"{type(exc).__name__}: {exc}"}
            data["items"][item]["elapsed_s"] = round(time.monotonic() - started, 1)
            print(f"bench: {item} done in {data['items'][item]['elapsed_s']} s", flush=True)
            # after every item, so an interrupted run keeps what it measured
            path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"bench: wrote {path.relative_to(HERE.parent)}")
    report.write(merged_results(data))
    return 0


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x.replace("_", "")) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text}") from exc


def machine() -> dict[str, Any]:
    def version(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).splitlines()[0].strip()
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "unknown"

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    import os

    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "wrk": version(["wrk", "-v"]),
        "etcd": version(["etcd", "--version"]),
    }


def latest_results() -> dict[str, Any]:
    files = sorted(RESULTS.glob("*.json"))
    if not files:
        raise SystemExit("no results yet: run `make bench`")
    return merged_results(json.loads(files[-1].read_text()))


def merged_results(newest: dict[str, Any]) -> dict[str, Any]:
    """A partial run (BENCH=x) reports its items next to the newest earlier result of the others,
    each marked with its own timestamp."""
    merged: dict[str, Any] = {"machine": newest["machine"], "items": {}, "sources": {}}
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        if data.get("format", 1) < FORMAT:
            continue
        for name, value in data.get("items", {}).items():
            if "error" not in value or name not in merged["items"]:
                merged["items"][name] = value
                merged["sources"][name] = data["timestamp"]
    for name, value in newest["items"].items():
        merged["items"][name] = value
        merged["sources"][name] = newest["timestamp"]
    return merged
