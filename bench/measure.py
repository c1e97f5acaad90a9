"""Measuring tools: wrk runs, per-process CPU/RSS from /proc, py-spy profiles, disk usage."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import httpload

HERE = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def wrk(
    port: int,
    requests: list[httpload.Request],
    duration: float,
    connections: int = 32,
    threads: int = 1,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Closed-loop maximum: ``wrk -t1 -c32`` cycling through ``requests`` (wrk_cycle.lua),
    sending ``headers`` (the Authorization of the production configuration) on every request."""
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as handle:
        for _, path, body in requests:
            handle.write(f"{path}\t{body.decode()}\n")
        table = handle.name
    cmd = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{int(duration)}s", "--latency",
        "-s", str(HERE / "wrk_cycle.lua"), f"http://127.0.0.1:{port}", "--", table,
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]  # fmt: skip
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=duration + 30, check=True
        ).stdout
    finally:
        os.unlink(table)
    return parse_wrk(out)


def parse_wrk(out: str) -> dict[str, Any]:
    result: dict[str, Any] = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])}  # type: ignore[index]
    total = re.search(r"(\d+) requests in", out)
    result["requests"] = int(total[1]) if total else 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx"] = int(non2xx[1]) if non2xx else 0
    sock = re.search(r"Socket errors: (.*)", out)
    result["socket_errors"] = sock[1].strip() if sock else ""
    for pct in ("50", "90", "99"):
        match = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        if match:
            result[f"p{pct}_ms"] = round(float(match[1]) * _UNITS[match[2]], 3)
    return result


# ---------------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


@dataclass
class CpuWindow:
    """CPU% of each pid between ``start()`` and ``stop()`` (100 = one core)."""

    pids: list[int]

    def start(self) -> CpuWindow:
        self._t0 = time.monotonic()
        self._c0 = [cpu_seconds(p) for p in self.pids]
        return self

    def stop(self) -> list[float]:
        elapsed = time.monotonic() - self._t0
        return [
            round(100 * (cpu_seconds(p) - c) / elapsed, 1)
            for p, c in zip(self.pids, self._c0, strict=True)
        ]


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def files_bytes(path: Path) -> dict[str, int]:
    return {
        str(f.relative_to(path)): f.stat().st_size for f in sorted(path.rglob("*")) if f.is_file()
    }


# ---------------------------------------------------------------------- py-spy


def pyspy_path() -> str | None:
    venv = Path(os.environ.get("VIRTUAL_ENV", HERE.parent / ".venv")) / "bin" / "py-spy"
    return str(venv) if venv.exists() else shutil.which("py-spy")


def profile_start(pid: int, duration: float, out: Path) -> subprocess.Popen[bytes] | None:
    binary = pyspy_path()
    if binary is None:
        return None
    cmd = [
        binary, "record", "--pid", str(pid), "--duration", str(int(duration)), "--rate", "250",
        "--format", "raw", "--nonblocking", "--output", str(out),
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize_profile(path: Path, top: int = 20) -> dict[str, Any]:
    """Top functions by own samples and by inclusive samples from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    if not path.exists():
        return {"samples": 0, "self": [], "inclusive": []}
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame(f) for f in stack.split(";")]
        own[frames[-1]] += count
        areas[area([f.strip() for f in stack.split(";")])] += count
        for name in set(frames):
            inclusive[name] += count

    def table(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "samples": n, "pct": round(100 * n / max(total, 1), 1)}
            for name, n in counter.most_common(top)
        ]

    return {
        "samples": total,
        "self": table(own),
        "inclusive": table(inclusive),
        "areas": table(areas),
    }


# (substring of a frame, area): the first match walking from the sampled frame towards the root
# names where the time goes; the order of the list does not matter, the stack's order does.
AREAS = (
    ("cfs_cluster/security/", "auth (credentials, tokens, rate limits)"),
    ("cfs_cluster/storage/", "storage (journal, fdatasync, snapshots)"),
    ("cfs_cluster/cluster/liveness", "liveness (heartbeat bookkeeping, checkpoints, sweep)"),
    ("cfs_cluster/cluster/relay", "relay (follower → leader)"),
    ("cfs_cluster/cluster/memberlink", "relay (follower → leader)"),
    ("cfs_cluster/cluster/", "cluster (replication, reads, lease, node)"),
    ("cfs_cluster/engine/", "engine (decisions, commands, state)"),
    ("cfs_cluster/ops/", "ops (metrics, logs)"),
    # our HTTP protocol: its own time is mostly the socket write of each answer
    ("cfs_cluster/api/connection", "HTTP server (uvicorn, httptools, api/connection.py)"),
    ("cfs_cluster/api/", "API handlers (front door, heartbeat lane, routes)"),
    ("cfs_cluster/", "cfs_cluster, other"),
    ("pysyncobj/", "pysyncobj (Raft, pickling, encryption)"),
    ("cryptography/", "pysyncobj (Raft, pickling, encryption)"),
    ("httpx/", "HTTP client (relay)"),
    ("httpcore/", "HTTP client (relay)"),
    ("uvicorn/", "HTTP server (uvicorn, httptools, api/connection.py)"),
    ("starlette/", "HTTP server (starlette, FastAPI)"),
    ("fastapi/", "HTTP server (starlette, FastAPI)"),
)
WAITING = ("Runner.run (", "PollPoller.poll (", "select (", "Condition.wait (", "Event.wait (")


def area(frames: list[str]) -> str:
    """The layer a sample is spent in: the nearest frame (from the leaf) of a known layer; a
    sample whose own frame is the event loop's or the Raft poller's wait is 'waiting'."""
    if frames and frames[-1].startswith(WAITING):
        return "waiting (event loop, Raft poller)"
    for frame in reversed(frames):
        for needle, name in AREAS:
            if needle in frame:
                return name
    return "other (interpreter, stdlib)"


def _frame(frame: str) -> str:
    """'func (path/to/file.py:123)' -> 'func (file.py)': aggregate over lines, short paths."""
    match = re.match(r"(.*) \((.*?):\d+\)$", frame.strip())
    if not match:
        return frame.strip()
    name, file = match[1], match[2]
    short = "/".join(Path(file).parts[-2:])
    return f"{name} ({short})"
