"""Heartbeat histories for fault tests: emulated adapters that record everything, and a checker.

Adapters (asyncio + httpx, a few at low rate) heartbeat every FailoverTimeout / 2 through a list
of node URLs, round-robin, moving to the next URL when an attempt fails or takes longer than
``patience``. An attempt the adapter gave up on stays open for ``late_timeout`` (longer than any
failover), and its answer is recorded whenever it arrives (``late=True``): a client with a longer
timeout would have acted on it. Every request is recorded with monotonic send and receive times
(the adapter's clock) and the answer (role, epoch, ValidFor). The checker then verifies the
safety properties of design.md over the recorded history, modelling what a client cannot know:

- P1: no two sessions of a group hold overlapping *possible* Primary grants. A Primary answer
  grants from its receive time until ``send + ValidFor``; the grant ends early only when that
  session *receives* a Secondary / PendingPrimary answer (one that is lost ends nothing). A late
  Primary answer counts the same way. A request of the holder (its last answer was Primary)
  whose answer may still have come (it timed out even after ``late_timeout``, or the run ended
  first) may have renewed the grant: it counts from its send time until send + the ValidFor it
  could have carried. An answer lost with its connection (reset, refused) reached no client and
  grants nothing. (A lost request of a session that did not hold the grant is not counted:
  judging it would need the service's own grant time, and every answer that reached the wire
  is recorded, late or not.)
- P2: no role (or epoch) change in a group after a given instant while its adapters heartbeat.
- P3: after a primary adapter stops, another session of its group is answered Primary within a
  bound, measured from the stopped adapter's last successful heartbeat send.
- P4: every acknowledged create is present at the end on every listed node.

The adapters run on their own event loop in a background thread, so a test can kill, stop and
restart nodes synchronously while they run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import httpx

from cfs_cluster.protocol.wire import TICKS_PER_SECOND, parse_timespan

PRIMARY, SECONDARY, PENDING = 1, 0, 2
MAX_CONFIRMATIONS = 10  # immediate PendingPrimary confirmations in a row (spec §4.2)
RETRY_DELAY = 0.1  # seconds before an adapter retries a failed heartbeat on the next URL
GAVE_UP = "gave up waiting"  # the adapter moved on; the attempt's outcome is recorded late

Key = tuple[str, str]


@dataclass(frozen=True)
class Record:
    """One heartbeat request as the adapter saw it (monotonic seconds)."""

    group: str
    session: str
    url: str
    sent: float
    received: float
    status: int | None  # None: transport error or client timeout
    role: int | None = None
    epoch: int | None = None
    valid_for: float | None = None  # seconds
    error: str | None = None
    request: int = 0  # links an attempt the adapter gave up on to its late answer
    late: bool = False  # the answer arrived after the adapter gave up on it
    could_carry: float = 0.0  # the longest ValidFor an answer could carry (0.999 T)
    indeterminate: bool = False  # no answer yet, but one may still come (a timeout)

    @property
    def ok(self) -> bool:
        """An answer the adapter saw (a late one it did not see)."""
        return self.status == 200 and self.role is not None and not self.late

    @property
    def key(self) -> Key:
        return (self.group, self.session)


@dataclass(frozen=True)
class Grant:
    session: str
    start: float
    end: float
    epoch: int


@dataclass(frozen=True)
class Violation:
    group: str
    first: Grant
    second: Grant

    def __str__(self) -> str:
        return (
            f"P1 in group {self.group}: {self.first.session} valid "
            f"[{self.first.start:.3f}, {self.first.end:.3f}] (epoch {self.first.epoch}) overlaps "
            f"{self.second.session} [{self.second.start:.3f}, {self.second.end:.3f}] "
            f"(epoch {self.second.epoch})"
        )


@dataclass
class History:
    records: list[Record] = field(default_factory=list)
    # Acknowledged creates: (group id, session id or None for a group).
    creates: list[tuple[str, str | None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, record: Record) -> None:
        with self._lock:
            self.records.append(record)

    def snapshot(self) -> list[Record]:
        with self._lock:
            return sorted(self.records, key=lambda r: r.sent)

    def of(self, key: Key) -> list[Record]:
        return [r for r in self.snapshot() if r.key == key]


# --------------------------------------------------------------------------- adapters


@dataclass
class Adapter:
    group: str
    session: str
    period: float  # FailoverTimeout / 2
    score: float = 50.0
    stopped: bool = False
    stopped_at: float | None = None
    source: str | None = None  # local address to send from (netkit can cut it off)
    urls: list[str] | None = None  # only these URLs (e.g. through a ReplyProxy), else the fleet's
    # Behave as our agent: report HeldRole/HeldEpoch, act on no grant it dropped, and
    # acknowledge a demotion with an immediate heartbeat (agent/agent.py).
    agent: bool = False
    acting: int | None = None  # the epoch it acts as Primary on
    acting_until: float = 0.0
    dropped: int = -1

    def held(self, now: float) -> dict[str, object]:
        if self.acting is not None and now >= self.acting_until:
            self.dropped, self.acting = max(self.dropped, self.acting), None  # lapsed
        if self.acting is not None:
            return {"HeldRole": "Primary", "HeldEpoch": self.acting}
        if self.dropped >= 0:
            return {"HeldRole": "Secondary", "HeldEpoch": self.dropped}
        return {"HeldRole": "Secondary"}

    def heard(self, record: Record) -> bool:
        """Apply an answer as our agent does; True when it just stepped down."""
        if record.epoch is None:
            return False
        if record.role == PRIMARY and record.epoch > self.dropped:
            self.acting, self.acting_until = record.epoch, record.sent + (record.valid_for or 0)
            return False
        was_acting = self.acting is not None
        self.dropped = max(self.dropped, record.epoch, self.acting or -1)
        self.acting = None
        return was_acting


class Fleet:
    """Emulated adapters heartbeating on a background event loop; stop() before reading results."""

    def __init__(
        self,
        urls: list[str],
        history: History,
        timeout: float = 0.5,
        health_check: float | None = None,
        late_timeout: float = 15.0,
        auth: httpx.Auth | tuple[str, str] | None = None,
    ) -> None:
        """``timeout`` (patience): P2 is owed only to adapters that heartbeat within T; with
        T = 2 s and a heartbeat every T/2, an attempt on a dead node may cost at most ~T/4
        before the retry. The attempt itself stays open ``late_timeout`` seconds so that its
        answer, however late, is recorded.
        ``health_check`` = seconds between /readyz probes of every URL: adapters then use
        only URLs that answered 200 last time, as behind a load balancer (compose/haproxy.cfg
        does the same with ``option httpchk GET /readyz``). ``auth``: (user, password) for
        nodes run with ``--auth required``."""
        self.urls = list(urls)
        self.health_check = health_check
        self._healthy: set[str] = set(urls)
        self.history = history
        self.timeout = timeout
        self.late_timeout = late_timeout
        self._requests = 0
        self._late: set[asyncio.Task[None]] = set()
        self.adapters: dict[Key, Adapter] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fleet", daemon=True)
        self._tasks: list[concurrent.futures.Future[None]] = []
        self._clients: dict[str | None, httpx.AsyncClient] = {}
        self._auth = auth  # the cluster's credentials (clusterkit.Cluster.auth), if it has any
        self._stopping = False

    def __enter__(self) -> Fleet:
        self._thread.start()
        if self.health_check is not None:
            task = asyncio.run_coroutine_threadsafe(self._probe(self.health_check), self._loop)
            self._tasks.append(task)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add(
        self,
        group: str,
        session: str,
        period: float,
        offset: int = 0,
        source: str | None = None,
        score: float = 50.0,
        agent: bool = False,
        urls: list[str] | None = None,
    ) -> None:
        adapter = Adapter(
            group, session, period, score=score, source=source, agent=agent, urls=urls
        )
        self.adapters[(group, session)] = adapter
        task = asyncio.run_coroutine_threadsafe(self._run(adapter, offset), self._loop)
        self._tasks.append(task)

    def add_writer(self, prefix: str, interval: float) -> None:
        """Create groups ``prefix-N`` every ``interval`` through round-robin URLs (for P4)."""
        task = asyncio.run_coroutine_threadsafe(self._write(prefix, interval), self._loop)
        self._tasks.append(task)

    def crash(self, group: str, session: str) -> float:
        """Stop one adapter as if its process died; return the monotonic time of the stop."""
        adapter = self.adapters[(group, session)]
        adapter.stopped_at = time.monotonic()
        adapter.stopped = True
        return adapter.stopped_at

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._stopping = True
        for adapter in self.adapters.values():
            adapter.stopped = True
        for task in self._tasks:
            with contextlib.suppress(Exception):
                task.result(timeout=self.timeout + 2)
        # Answers still on their way are recorded (or give up at late_timeout).
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._drain_late(), self._loop).result(
                self.late_timeout + 5
            )
        for client in self._clients.values():
            asyncio.run_coroutine_threadsafe(client.aclose(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _http(self, source: str | None = None) -> httpx.AsyncClient:
        if source not in self._clients:
            transport = httpx.AsyncHTTPTransport(local_address=source) if source else None
            self._clients[source] = httpx.AsyncClient(
                timeout=self.late_timeout, transport=transport, auth=self._auth
            )
        return self._clients[source]

    async def _drain_late(self) -> None:
        if self._late:
            await asyncio.wait(set(self._late))

    async def _run(self, adapter: Adapter, offset: int) -> None:
        index = offset
        confirmations = 0
        while not adapter.stopped:
            usable = adapter.urls or [u for u in self.urls if u in self._healthy] or self.urls
            url = usable[index % len(usable)]
            index += 1  # round-robin; a failure retries on the next URL
            record = await self._beat(adapter, url)
            self.history.add(record)
            stepped_down = adapter.agent and record.ok and adapter.heard(record)
            if stepped_down:
                continue  # our agent acknowledges a demotion at once
            if record.ok and record.role == PENDING and confirmations < MAX_CONFIRMATIONS:
                confirmations += 1  # as real adapters do: confirm at once (spec §4.2)
                continue
            confirmations = 0
            wait = adapter.period - (time.monotonic() - record.sent) if record.ok else RETRY_DELAY
            await _sleep_unless_stopped(adapter, max(wait, 0.0))

    async def _beat(self, adapter: Adapter, url: str) -> Record:
        """One attempt; after ``timeout`` the adapter moves on, and the attempt's answer is
        recorded late (or as lost) when it ends."""
        self._requests += 1
        request, sent = self._requests, time.monotonic()
        attempt = asyncio.ensure_future(self._post(adapter, url, request, sent))
        try:
            return await asyncio.wait_for(asyncio.shield(attempt), self.timeout)
        except TimeoutError:
            late = asyncio.ensure_future(self._record_late(attempt))
            self._late.add(late)
            late.add_done_callback(self._late.discard)
            return Record(
                adapter.group, adapter.session, url, sent, time.monotonic(), None,
                error=GAVE_UP, request=request, could_carry=2 * adapter.period * 0.999,
            )  # fmt: skip

    async def _record_late(self, attempt: asyncio.Future[Record]) -> None:
        self.history.add(dataclasses.replace(await attempt, late=True))

    async def _post(self, adapter: Adapter, url: str, request: int, sent: float) -> Record:
        path = f"/api/v1/clientfailover/groups/{adapter.group}/clientsessions/{adapter.session}/heartbeat"
        body: dict[str, object] = {"FailoverScore": adapter.score}
        if adapter.agent:
            body.update(adapter.held(sent))
        carry = 2 * adapter.period * 0.999
        try:
            response = await self._http(adapter.source).post(url + path, json=body)
        except httpx.TimeoutException as exc:
            return Record(
                adapter.group, adapter.session, url, sent, time.monotonic(), None,
                error=repr(exc), request=request, could_carry=carry, indeterminate=True,
            )  # fmt: skip
        except httpx.HTTPError as exc:
            received = time.monotonic()
            return Record(
                adapter.group, adapter.session, url, sent, received, None, error=repr(exc),
                request=request, could_carry=carry,
            )  # fmt: skip
        received = time.monotonic()
        if response.status_code != 200:
            return Record(
                adapter.group, adapter.session, url, sent, received, response.status_code,
                error=response.text[:300], request=request, could_carry=carry,
            )  # fmt: skip
        answer = response.json()
        valid = parse_timespan(answer["ValidFor"], "ValidFor") / TICKS_PER_SECOND
        return Record(
            adapter.group, adapter.session, url, sent, received, 200,
            role=int(answer["Role"]), epoch=int(answer["Epoch"]), valid_for=valid,
            request=request, could_carry=carry,
        )  # fmt: skip

    async def _probe(self, interval: float) -> None:
        """The load balancer's health check: a URL is usable while /readyz answers 200."""
        while not self._stopping:
            for url in list(self.urls):
                try:
                    ready = (await self._http().get(url + "/readyz", timeout=0.5)).status_code
                except httpx.HTTPError:
                    ready = 0
                if ready == 200:
                    self._healthy.add(url)
                else:
                    self._healthy.discard(url)
            await asyncio.sleep(interval)

    async def _write(self, prefix: str, interval: float) -> None:
        number = 0
        while not self._stopping:
            group = f"{prefix}-{number}"
            usable = [u for u in self.urls if u in self._healthy] or self.urls
            url = usable[number % len(usable)]
            body = {"Id": group, "FailoverTimeout": "00:01:00"}
            number += 1
            with contextlib.suppress(httpx.HTTPError):
                response = await self._http().post(url + "/api/v1/clientfailover/groups", json=body)
                if response.status_code in (200, 201):
                    with self.history._lock:
                        self.history.creates.append((group, None))
            await asyncio.sleep(interval)


async def _sleep_unless_stopped(adapter: Adapter, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not adapter.stopped and time.monotonic() < deadline:
        await asyncio.sleep(min(0.05, max(deadline - time.monotonic(), 0.0)))


# --------------------------------------------------------------------------- checker


def grants(records: Iterable[Record]) -> dict[str, list[Grant]]:
    """Possible Primary grant intervals per group (module docstring, P1), from each session's
    own requests, on the adapter's clock."""
    by_session: dict[Key, list[Record]] = defaultdict(list)
    for record in records:
        by_session[record.key].append(record)
    result: dict[str, list[Grant]] = defaultdict(list)
    for (group, session), attempts in by_session.items():
        for grant in _session_grants(session, attempts):
            result[group].append(grant)
    return result


def _session_grants(session: str, attempts: list[Record]) -> list[Grant]:
    outcome = {r.request: r for r in attempts if r.late and r.request}
    seen = sorted((r for r in attempts if r.ok), key=lambda r: r.received)
    found: list[Grant] = []
    holding = False  # the last answer the adapter saw was Primary
    for record in sorted((r for r in attempts if not r.late), key=lambda r: r.sent):
        if record.ok:
            holding = record.role == PRIMARY
            if holding and record.valid_for is not None:
                found.append(_grant(session, record, record.received, record.valid_for, seen))
        elif record.status is None and holding and _may_still_answer(record, outcome):
            # It may have renewed the grant for a client that waited longer.
            found.append(_grant(session, record, record.sent, record.could_carry, seen))
    for record in attempts:
        if record.late and record.role == PRIMARY and record.valid_for is not None:
            found.append(_grant(session, record, record.received, record.valid_for, seen))
    return [g for g in found if g.end > g.start]


def _may_still_answer(record: Record, late: dict[int, Record]) -> bool:
    """An answer may have arrived in time to be acted on: nothing was observed of the attempt
    until its send + ValidFor (a timeout sooner, or the run ended first). One that did not
    come before then grants nothing, whoever waited for it."""
    final = late.get(record.request) if record.error == GAVE_UP else record
    if final is None:
        return True  # the run ended while it was open
    return final.indeterminate and final.received < record.sent + record.could_carry


def _grant(
    session: str, record: Record, start: float, valid_for: float, seen: list[Record]
) -> Grant:
    """From ``start`` until send + ValidFor, or until the adapter receives a non-Primary
    answer to a later request."""
    end = record.sent + valid_for
    for later in seen:
        if later.sent > record.sent and later.role != PRIMARY:
            end = min(end, later.received)
            break
    return Grant(session, start, end, record.epoch or 0)


def p1_violations(records: Iterable[Record]) -> list[Violation]:
    found: list[Violation] = []
    for group, intervals in grants(records).items():
        intervals.sort(key=lambda g: g.start)
        for i, first in enumerate(intervals):
            for second in intervals[i + 1 :]:
                if second.start >= first.end:
                    break
                if second.session != first.session:
                    found.append(Violation(group, first, second))
    return found


def role_changes(records: Iterable[Record], since: float) -> list[str]:
    """P2: every role or epoch a session was answered after ``since`` differs from its last one before."""
    last: dict[Key, tuple[int | None, int | None]] = {}
    changes: list[str] = []
    for record in sorted((r for r in records if r.ok), key=lambda r: r.received):
        now = (record.role, record.epoch)
        before = last.get(record.key)
        if record.sent >= since and before is not None and before != now:
            changes.append(
                f"{record.group}/{record.session} at {record.received - since:+.2f} s "
                f"via {record.url}: (role, epoch) {before} -> {now}"
            )
        last[record.key] = now
    return changes


def primaries_at(records: Iterable[Record], when: float) -> dict[str, set[str]]:
    """The sessions per group whose latest answer received before ``when`` was Primary."""
    latest: dict[Key, Record] = {}
    for record in records:
        newer = record.key not in latest or latest[record.key].received < record.received
        if record.ok and record.received <= when and newer:
            latest[record.key] = record
    result: dict[str, set[str]] = defaultdict(set)
    for (group, session), record in latest.items():
        sessions = result[group]  # every answered group appears, even without a primary
        if record.role == PRIMARY:
            sessions.add(session)
    return dict(result)


def failed_seconds(records: Iterable[Record], since: float) -> float:
    """Longest span, over adapters, from a failed heartbeat sent after ``since`` to the next success."""
    worst = 0.0
    by_session: dict[Key, list[Record]] = defaultdict(list)
    for record in records:
        by_session[record.key].append(record)
    for answers in by_session.values():
        answers.sort(key=lambda r: r.sent)
        first_failure: float | None = None
        for record in answers:
            if record.sent < since:
                continue
            if not record.ok and first_failure is None:
                first_failure = record.sent
            elif record.ok and first_failure is not None:
                worst = max(worst, record.received - first_failure)
                first_failure = None
        if first_failure is not None:  # still failing at the end
            worst = max(worst, answers[-1].received - first_failure)
    return worst


def promotion_delay(
    records: Iterable[Record], group: str, stopped: str, stop_time: float
) -> float | None:
    """P3: seconds from the stopped primary's last successful send to another session's Primary."""
    ordered = sorted(records, key=lambda r: r.received)
    last_sent = max(
        (r.sent for r in ordered if r.ok and r.key == (group, stopped) and r.sent <= stop_time),
        default=None,
    )
    if last_sent is None:
        return None
    for record in ordered:
        if (
            record.ok
            and record.group == group
            and record.session != stopped
            and record.role == PRIMARY
            and record.sent > last_sent
        ):
            return record.received - last_sent
    return None


def server_errors(records: Iterable[Record]) -> list[Record]:
    """Answers no fault may cause: 5xx other than 503 (Unavailable), and any 4xx."""
    return [r for r in records if r.status is not None and r.status != 200 and r.status != 503]


def missing_creates(
    history: History,
    urls: list[str],
    timeout: float = 10.0,
    transport: httpx.BaseTransport | None = None,
    auth: httpx.Auth | tuple[str, str] | None = None,
) -> list[str]:
    """P4: acknowledged creates absent on a node (each node gets ``timeout`` to catch up)."""
    missing: list[str] = []
    with httpx.Client(timeout=2, transport=transport, auth=auth) as client:
        for url in urls:
            for group, session in history.creates:
                path = f"/api/v1/clientfailover/groups/{group}"
                if session is not None:
                    path += f"/clientsessions/{session}"
                if not _eventually_found(client, url + path, timeout):
                    missing.append(f"{url}{path}")
    return missing


def _eventually_found(client: httpx.Client, url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if client.get(url).status_code == 200:
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


@contextlib.contextmanager
def fleet(urls: list[str], history: History, timeout: float = 1.0) -> Iterator[Fleet]:
    with Fleet(urls, history, timeout) as running:
        yield running


def ungranted_seconds(records: Iterable[Record], key: Key, since: float, until: float) -> float:
    """Seconds within [since, until] in which the session held no grant it had received: the
    complement of its Primary answers' [receive, send + ValidFor) (cut short by a later
    non-Primary answer it received), which is when our agent acts as Primary. P2 from the
    adapter's side: a leader change must not leave a primary without a valid grant."""
    mine = [r for r in records if r.key == key]
    seen = sorted((r for r in mine if r.ok), key=lambda r: r.received)
    held = sorted(
        (
            _grant(key[1], r, r.received, r.valid_for, seen)
            for r in seen
            if r.role == PRIMARY and r.valid_for
        ),
        key=lambda g: g.start,
    )
    covered, reach = 0.0, since
    for grant in held:
        start, end = max(grant.start, reach), min(grant.end, until)
        if end > start:
            covered += end - start
            reach = end
    return (until - since) - covered
