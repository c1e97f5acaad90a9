"""A raw asyncio HTTP/1.1 client: keep-alive connections, no parsing beyond status and framing.

httpx tops out near 300-800 requests/s and would measure itself (research/probe-notes.md); this
client does several thousand per second on uvloop. Two uses:

- ``run_all``: send a list of requests with bounded concurrency (registration, lease grants);
- ``fixed_rate``: an open-loop schedule at a fixed rate (wrk2 semantics, which Debian's wrk
  lacks): request k is due at t0 + k/rate, and its latency is measured from when it was due, so
  a stalled server is not hidden by the client waiting (coordinated omission).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import uvloop

Request = tuple[str, str, bytes]  # method, path, body


def encode(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """One raw request; ``headers`` (e.g. Authorization) are sent on every request, as an
    adapter with credentials does."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes, timeout: float) -> tuple[int, bytes]:
        """Send one request; (status, body). Reconnects after any failure."""
        try:
            return await asyncio.wait_for(self._request(raw), timeout)
        except BaseException:
            self.close()
            raise

    async def _request(self, raw: bytes) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        self._writer.write(raw)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        if b"transfer-encoding: chunked" in lower:
            return status, await self._chunked()
        start = lower.find(b"content-length:")
        length = int(lower[start + 15 : lower.find(b"\r\n", start)]) if start >= 0 else 0
        body = await self._reader.readexactly(length) if length else b""
        if b"connection: close" in lower:
            self.close()
        return status, body

    async def _chunked(self) -> bytes:
        assert self._reader is not None
        parts = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


async def run_all(
    host: str,
    port: int,
    requests: Sequence[Request],
    concurrency: int = 32,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10,
) -> list[tuple[int, bytes]]:
    """Send every request once (bounded concurrency, in order per connection); results in order."""
    results: list[tuple[int, bytes]] = [(0, b"")] * len(requests)
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        conn = Connection(host, port)
        try:
            while next_index < len(requests):
                i = next_index
                next_index += 1
                method, path, body = requests[i]
                raw = encode(host, port, method, path, body, headers)
                try:
                    results[i] = await conn.request(raw, timeout)
                except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                    results[i] = (0, repr(exc).encode())
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


@dataclass
class RateResult:
    rate: float
    duration: float
    sent: int = 0
    ok: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, from the due time
    statuses: dict[int, int] = field(default_factory=dict)
    events: list[tuple[float, int, int, bytes]] = field(
        default_factory=list
    )  # (t, k, status, body)

    def summary(self) -> dict[str, float | int]:
        lat = sorted(self.latencies)
        return {
            "target_rate": round(self.rate, 1),
            "achieved_rate": round(self.ok / self.duration, 1),
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "p50_ms": round(percentile(lat, 50) * 1000, 3),
            "p90_ms": round(percentile(lat, 90) * 1000, 3),
            "p99_ms": round(percentile(lat, 99) * 1000, 3),
            "max_ms": round((lat[-1] if lat else 0) * 1000, 3),
        }


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


async def fixed_rate(
    targets: Sequence[tuple[str, int]],
    requests: Sequence[Request],
    rate: float,
    duration: float,
    connections: int = 32,
    timeout: float = 5,
    keep_events: bool = False,
    headers: Mapping[str, str] | None = None,
) -> RateResult:
    """Open-loop load at ``rate`` requests/s for ``duration`` s, cycling through ``requests``.

    Connection i goes to targets[i % len(targets)]. Request k goes to the connection that
    takes it, which preserves the per-target share only approximately; fine for our uses.
    """
    result = RateResult(rate=rate, duration=duration)
    total = int(rate * duration)
    start = time.perf_counter() + 0.05
    counter = 0

    # encoded once per target, not per connection: 100,000 sessions × 128 connections would not fit
    by_target = {
        (host, port): [encode(host, port, m, p, b, headers) for m, p, b in requests]
        for host, port in dict.fromkeys(targets)
    }

    async def worker(index: int) -> None:
        nonlocal counter
        host, port = targets[index % len(targets)]
        conn = Connection(host, port)
        encoded = by_target[(host, port)]
        try:
            while counter < total:
                k = counter
                counter += 1
                due = start + k / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                result.sent += 1
                try:
                    status, body = await conn.request(encoded[k % len(encoded)], timeout)
                except (OSError, TimeoutError, asyncio.IncompleteReadError):
                    status, body = 0, b""
                done = time.perf_counter()
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if 200 <= status < 300:
                    result.ok += 1
                    result.latencies.append(done - due)
                else:
                    result.errors += 1
                if keep_events:
                    result.events.append((done - start, k, status, body))
        finally:
            conn.close()

    await asyncio.gather(*(worker(i) for i in range(connections)))
    return result


def run(coro: object) -> object:
    """Run a coroutine on uvloop (the client must not be the bottleneck)."""
    return uvloop.run(coro)  # type: ignore[arg-type]
