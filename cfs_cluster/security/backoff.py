"""Back-off of wrong credentials, counted per account, per source address and per pair, and
the source address a request is counted against (the peer, or X-Forwarded-For behind a
trusted proxy). Why it counts before it hashes: security/auth.py."""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from cfs_cluster.errors import TooManyRequests
from cfs_cluster.settings import SecuritySettings

__all__ = ["Attempt", "Backoff", "ClientAddress"]

_TRACKED_SOURCES = 10_000  # accounts, sources and pairs each; the least recent is dropped
_FAILURE_MEMORY = 600.0  # seconds after the newest failure that a count is forgotten


@dataclass
class _Count:
    failures: int
    last: float  # clock time of the newest failure


@dataclass(frozen=True)
class Attempt:
    """A reserved attempt: counted as a failure until ``Backoff.succeeded`` takes it back."""

    account: str | None
    source: str


class Backoff:
    """Failure counts per account, per source address, and per (account, source) pair.

    An attempt is refused while its account or its source is backing off: after ``threshold``
    failures it waits 1 s, then 2, 4, ... up to ``max_wait`` for each further one, measured from
    the newest failure. A count is forgotten ``_FAILURE_MEMORY`` seconds after its newest
    failure. A success takes back only what the same account failed from the same source (a
    user mistyping), never another account's or another source's failures.
    """

    def __init__(self, settings: SecuritySettings, clock: Callable[[], float]) -> None:
        self._account_threshold = settings.failures_before_backoff
        self._source_threshold = settings.source_failures_before_backoff
        self._max_wait = settings.max_backoff
        self._clock = clock
        self._accounts: OrderedDict[str, _Count] = OrderedDict()
        self._sources: OrderedDict[str, _Count] = OrderedDict()
        self._pairs: OrderedDict[tuple[str | None, str], _Count] = OrderedDict()

    def reserve(self, account: str | None, source: str) -> Attempt:
        """Count one attempt as failed now, before its hash is computed; TooManyRequests
        instead while its account or source must wait. Nothing awaits between the check and
        the count, so concurrent attempts are counted one by one."""
        now = self._clock()
        wait = self._source_wait(source, now)
        what = "this address"
        if account is not None and (account_wait := self._account_wait(account, now)) > wait:
            wait, what = account_wait, "this account"
        if wait > 0:
            raise TooManyRequests(
                f"Too many failed authentication attempts for {what}.", retry_after=wait
            )
        if account is not None:
            _add(self._accounts, account, 1, now)
        _add(self._sources, source, 1, now)
        _add(self._pairs, (account, source), 1, now)
        return Attempt(account, source)

    def succeeded(self, attempt: Attempt) -> None:
        pair = self._pairs.pop((attempt.account, attempt.source), None)
        taken_back = pair.failures if pair is not None else 1
        if attempt.account is not None:
            _subtract(self._accounts, attempt.account, taken_back)
        _subtract(self._sources, attempt.source, taken_back)

    def withdraw(self, attempt: Attempt) -> None:
        """Take back this one attempt: nothing was checked (the node could not tell whether the
        credentials are right), so it is no failure."""
        _subtract(self._pairs, (attempt.account, attempt.source), 1)
        if attempt.account is not None:
            _subtract(self._accounts, attempt.account, 1)
        _subtract(self._sources, attempt.source, 1)

    def _account_wait(self, account: str, now: float) -> float:
        return self._wait(self._accounts.get(account), self._account_threshold, now)

    def _source_wait(self, source: str, now: float) -> float:
        return self._wait(self._sources.get(source), self._source_threshold, now)

    def _wait(self, count: _Count | None, threshold: int, now: float) -> float:
        if count is None or count.failures < threshold or now - count.last > _FAILURE_MEMORY:
            return 0.0
        delay = min(self._max_wait, 2.0 ** (count.failures - threshold))
        return max(0.0, count.last + delay - now)


_Key = TypeVar("_Key")


def _add(table: OrderedDict[_Key, _Count], key: _Key, failures: int, now: float) -> None:
    count = table.pop(key, None)
    if count is None or now - count.last > _FAILURE_MEMORY:
        count = _Count(0, now)
    count.failures += failures
    count.last = now
    table[key] = count  # re-inserted: most recent last, so the oldest is evicted first
    while len(table) > _TRACKED_SOURCES:
        table.popitem(last=False)


def _subtract(table: OrderedDict[_Key, _Count], key: _Key, failures: int) -> None:
    count = table.get(key)
    if count is not None:
        count.failures = max(0, count.failures - failures)


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as proxies write it in X-Forwarded-For: bare, ``[v6]``, or ``v4:port``."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class ClientAddress:
    """The address the back-off counts a request against.

    The TCP peer, unless the peer is a trusted proxy: then the right-most X-Forwarded-For
    entry that is not itself a trusted proxy (entries further left were written by the client
    and prove nothing). Without trusted proxies the header is ignored entirely.
    """

    def __init__(self, trusted: Iterable[str]) -> None:
        self._networks = [ipaddress.ip_network(n, strict=False) for n in trusted]
        self._peers: dict[str, bool] = {}  # peer address -> trusted; few distinct peers

    def of(self, peer: str, headers: Iterable[tuple[bytes, bytes]]) -> str:
        if not self._networks or not self._is_trusted_peer(peer):
            return peer
        forwarded = b",".join(v for k, v in headers if k == b"x-forwarded-for")
        client = peer
        for entry in reversed(forwarded.decode("latin-1").split(",")):
            address = _parse_ip(entry)
            if address is None:
                break
            client = str(address)
            if not self._trusted(address):
                break
        return client

    def _is_trusted_peer(self, peer: str) -> bool:
        known = self._peers.get(peer)
        if known is None:
            address = _parse_ip(peer)
            known = address is not None and self._trusted(address)
            if len(self._peers) >= _TRACKED_SOURCES:
                self._peers.clear()
            self._peers[peer] = known
        return known

    def _trusted(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in network for network in self._networks)
