"""The leader's lease and a follower's view of its leader, from our own stamps on one clock.

pysyncobj stamps a follower's answer (``next_node_idx``) with CLOCK_MONOTONIC_RAW when the
leader *processes* it, and the answer names neither the term nor the message it answers. Two
things go wrong with that as a lease: compared with another clock (``time.monotonic`` is
CLOCK_MONOTONIC, which NTP slews) a fresh answer can look old or an old one fresh; and after a
SIGSTOP/SIGCONT the answers buffered in the sockets during the pause are processed as if they
had just been given, so a leader that the others deposed meanwhile looks confirmed.

So the leader tags every ``append_entries`` it sends with a sequence number and notes when it
sent it, on one clock; a follower echoes the number of the ``append_entries`` it is answering
(it answers in the same call, so the echo is exact). The lease counts only the *send time* of
the newest message each follower confirmed in the leader's current term: an answer, however
late it is processed, proves only that the follower was following this leader when that message
reached it. The argument for P1 built on it is in docs/safety.md.

Extra message keys are ignored by pysyncobj, so a node of an earlier release interoperates; its
answers carry no echo and simply do not count towards the lease.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["SEQUENCE_KEY", "LeaderContact", "LeaseTracker"]

SEQUENCE_KEY = "cfs_seq"
_APPEND = "append_entries"
_ANSWER = "next_node_idx"


class LeaseTracker:
    """Both sides of the echo: stamps outgoing messages, reads incoming answers.

    ``stamp`` and ``observe`` run on pysyncobj's tick thread; ``confirmed`` on any thread.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, keep: float = 10.0) -> None:
        self._clock = clock
        self._keep = keep  # seconds a sent message's time is kept for its answer
        self._numbers = itertools.count(1)
        self._sent: OrderedDict[int, float] = OrderedDict()  # sequence -> send time
        self._confirmed: dict[Any, float] = {}  # node -> send time of its newest answered message
        self._echo: dict[Any, Any] = {}  # follower side: the number to echo to each node
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget every confirmation: called as this node becomes leader of a new term."""
        with self._lock:
            self._sent.clear()
            self._confirmed.clear()

    def stamp(self, node: Any, message: Any) -> None:
        """Tag an outgoing message (called just before pysyncobj sends it)."""
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind == _APPEND:
            number = next(self._numbers)
            now = self._clock()
            with self._lock:
                self._sent[number] = now
                while self._sent and next(iter(self._sent.values())) < now - self._keep:
                    self._sent.popitem(last=False)
            message[SEQUENCE_KEY] = number
        elif kind == _ANSWER:
            echo = self._echo.get(node)
            if echo is not None:
                message[SEQUENCE_KEY] = echo

    def observe(self, node: Any, message: Any, current_term: int) -> None:
        """Read an incoming message before pysyncobj handles it."""
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind == _APPEND:
            # pysyncobj answers an append_entries of the current term (or a newer one) in the
            # same call; an older one gets no answer, so nothing is echoed for it.
            term = message.get("term")
            fresh = isinstance(term, int) and term >= current_term
            self._echo[node] = message.get(SEQUENCE_KEY) if fresh else None
        elif kind == _ANSWER:
            number = message.get(SEQUENCE_KEY)
            with self._lock:
                sent = self._sent.get(number) if isinstance(number, int) else None
                if sent is not None and sent > self._confirmed.get(node, -1.0):
                    self._confirmed[node] = sent

    def delivered(self, node: Any) -> None:
        """pysyncobj has handled the message: later answers to this node echo nothing."""
        self._echo.pop(node, None)

    def confirmed(self, nodes: Iterable[Any], within: float) -> int:
        """How many of ``nodes`` confirmed a message this leader sent at most ``within`` ago."""
        now = self._clock()
        with self._lock:
            return sum(1 for node in nodes if now - self._confirmed.get(node, -1e18) <= within)


class LeaderContact:
    """A follower's last contact with the leader of its current term (one clock)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: tuple[Any, int, float] | None = None  # node, term, when

    def observe(self, node: Any, message: Any, current_term: int) -> None:
        if not isinstance(message, dict) or message.get("type") != _APPEND:
            return
        term = message.get("term")
        if isinstance(term, int) and term >= current_term:  # pysyncobj accepts it as leader
            self._last = (node, term, self._clock())

    def age(self) -> float | None:
        """Seconds since a leader (of whatever term) was last heard; None if never."""
        last = self._last
        return None if last is None else self._clock() - last[2]

    def heard_within(self, leader: Any, term: int, seconds: float) -> bool:
        """The current leader, in the current term, was heard at most ``seconds`` ago."""
        last = self._last
        if last is None:
            return False
        node, heard_term, when = last
        return node == leader and heard_term == term and self._clock() - when <= seconds
