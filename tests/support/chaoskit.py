"""Hand-overs under composed faults (issue 13 item 5), for `make chaos` and its CI subset.

A *rig* is a 3-node cluster with every node in its own network namespace (netkit), a wall-clock
file per node (``cfs serve --test-clock-file``, cluster/clock.py) and a fleet of emulated
adapters recording every heartbeat (history.py). A *schedule* is one hand-over under faults:

1. a fresh group ``sN`` (T = 2 s) whose session ``a`` (score 60) becomes Primary and ``b``
   (score 50) Secondary; ``a`` sends from the rig's cut-off host address, so that its answers
   alone can be dropped;
2. the faults of phase ``before`` start (answers to ``a`` dropped, a paused or partitioned
   follower, one-way / bridge / flapping links, a skewed wall clock);
3. the hand-over: an override to ``b`` (with or without expiry), ``a``'s score dropped to 0,
   ``a``'s session deleted, ``a``'s adapter crashed, or none;
4. right after it, the faults of phase ``after`` (the leader paused, partitioned or killed just
   after deciding, a wall-clock jump);
5. after 1-4 s every fault is undone, the cluster must be ready again, and the schedule ends
   when ``b`` holds the role (or after a bound).

Node faults of one schedule all hit one *victim* (the leader or a follower, and one other node
for a link fault), so a majority always survives and P2 is owed to the other groups.
"""

from __future__ import annotations

import contextlib
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from support.clusterkit import Cluster
from support.history import GAVE_UP, PRIMARY, SECONDARY, Fleet, History
from support.netkit import Network

T = 2.0
API = "/api/v1/clientfailover/groups"
FAULT_SECONDS = (1.0, 4.0)  # how long the faults of one schedule last
JUMP_SECONDS = 3600.0  # a wall-clock jump (an NTP step, a VM restored from a snapshot)
CALL_PATIENCE = 15.0  # seconds an administrative call may retry through the live nodes


@dataclass
class Rig:
    cluster: Cluster
    net: Network
    clocks: list[Path]
    fleet: Fleet
    history: History

    def set_clock(self, node: int, offset: float) -> None:
        """Skew node ``node``'s wall clock by ``offset`` seconds (0 = true time)."""
        self.clocks[node].write_text(f"{offset}\n")

    def call(
        self, method: str, path: str, body: object = None, avoid: frozenset[int] = frozenset()
    ) -> httpx.Response:
        """An administrative call through any live node not in ``avoid``, retried while the
        cluster answers 503 (an election) or a node is unreachable."""
        candidates = [i for i, n in enumerate(self.cluster.nodes) if n.alive and i not in avoid]
        deadline = time.monotonic() + CALL_PATIENCE
        attempt = 0
        while True:
            url = self.cluster.nodes[candidates[attempt % len(candidates)]].url
            attempt += 1
            try:
                response = self.cluster.client.request(method, url + path, json=body, timeout=3)
                if response.status_code != 503:
                    return response
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{method} {path}: no node answered in {CALL_PATIENCE} s")
            time.sleep(0.1)


@contextlib.contextmanager
def make_rig(base: Path) -> Iterator[Rig]:
    """A netns cluster with a clock file per node and a running fleet; all stopped after."""
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(Network())
        cluster = Cluster(base, placement=net.placement())
        clocks = clock_files(base, cluster)
        stack.enter_context(cluster)
        history = History()
        fleet = stack.enter_context(Fleet(cluster.urls, history, auth=cluster.auth))
        yield Rig(cluster, net, clocks, fleet, history)


def clock_files(base: Path, cluster: Cluster) -> list[Path]:
    """One wall-clock file per node, named to its node before the cluster starts."""
    files = []
    for node in cluster.nodes:
        path = base / f"{node.node_id}.clock"
        path.write_text("0\n")
        node.extra_args += ["--test-clock-file", str(path)]
        files.append(path)
    return files


# --------------------------------------------------------------------------- faults


@dataclass
class Injected:
    kind: str
    what: str
    undo: Callable[[], None]


@dataclass(frozen=True)
class FaultKind:
    name: str
    phase: str  # "before" the hand-over, or "after" it (right after the decision)
    # "leader", "follower", "link" (the victim and one other node, either role) or "any"
    # (faults that need no victim: a clock, the adapter's path)
    victim: str
    inject: Callable[[Rig, int, random.Random], Injected]


def _drop_replies(rig: Rig, victim: int, rng: random.Random) -> Injected:
    ports = [n.api_port for n in rig.cluster.nodes]
    rig.net.drop_replies_to(rig.net.cut_off_source, ports)
    return Injected("drop-replies", "answers to the primary adapter dropped", rig.net.heal)


def _pause(rig: Rig, victim: int, rng: random.Random) -> Injected:
    node = rig.cluster.nodes[victim]
    node.signal(signal.SIGSTOP)
    return Injected("pause", f"SIGSTOP {node.node_id}", lambda: node.signal(signal.SIGCONT))


def _kill(rig: Rig, victim: int, rng: random.Random) -> Injected:
    node = rig.cluster.nodes[victim]
    node.kill()
    return Injected("kill", f"kill -9 {node.node_id}", node.start)


def _isolate(rig: Rig, victim: int, rng: random.Random) -> Injected:
    for other in range(3):
        if other != victim:
            rig.net.cut(victim, other)
    name = rig.cluster.nodes[victim].node_id
    return Injected("isolate", f"{name} cut off from both peers", rig.net.heal)


def _other(victim: int, rng: random.Random) -> int:
    return rng.choice([i for i in range(3) if i != victim])


def _one_way(rig: Rig, victim: int, rng: random.Random) -> Injected:
    other = _other(victim, rng)
    source, sink = (victim, other) if rng.random() < 0.5 else (other, victim)
    rig.net.cut_one_way(source, sink)
    names = rig.cluster.nodes[source].node_id, rig.cluster.nodes[sink].node_id
    return Injected("one-way", "{} -> {} dropped (one way)".format(*names), rig.net.heal)


def _bridge(rig: Rig, victim: int, rng: random.Random) -> Injected:
    other = _other(victim, rng)
    rig.net.cut(victim, other)
    bridge = 3 - victim - other
    names = [rig.cluster.nodes[i].node_id for i in (victim, other, bridge)]
    return Injected("bridge", "{} x {} cut, {} reaches both".format(*names), rig.net.heal)


def _flapping(rig: Rig, victim: int, rng: random.Random) -> Injected:
    other, stop = _other(victim, rng), threading.Event()
    period = rng.uniform(0.2, 0.8)

    def flap() -> None:
        while not stop.is_set():
            rig.net.cut(victim, other)
            stop.wait(period)
            rig.net.uncut(victim, other)
            stop.wait(period)

    thread = threading.Thread(target=flap, name="flap", daemon=True)
    thread.start()

    def undo() -> None:
        stop.set()
        thread.join(5)
        rig.net.uncut(victim, other)

    names = rig.cluster.nodes[victim].node_id, rig.cluster.nodes[other].node_id
    return Injected("flapping", "{} x {} flapping every {:.1f} s".format(*names, period), undo)


def _clock_skew(rig: Rig, victim: int, rng: random.Random) -> Injected:
    node = rng.randrange(3)
    offset = rng.choice([-1, 1]) * rng.uniform(5, 120)
    rig.set_clock(node, offset)
    name = rig.cluster.nodes[node].node_id
    return Injected(
        "clock-skew", f"{name} wall clock {offset:+.0f} s", lambda: rig.set_clock(node, 0)
    )


def _clock_jump(rig: Rig, victim: int, rng: random.Random) -> Injected:
    node = rng.randrange(3)
    offset = rng.choice([-1, 1]) * JUMP_SECONDS
    rig.set_clock(node, offset)
    name = rig.cluster.nodes[node].node_id
    return Injected(
        "clock-jump", f"{name} wall clock jumps {offset:+.0f} s", lambda: rig.set_clock(node, 0)
    )


FAULT_KINDS: dict[str, FaultKind] = {
    kind.name: kind
    for kind in [
        FaultKind("drop-replies", "before", "any", _drop_replies),
        FaultKind("pause-leader", "after", "leader", _pause),
        FaultKind("partition-leader", "after", "leader", _isolate),
        FaultKind("kill-leader", "after", "leader", _kill),
        FaultKind("pause-follower", "before", "follower", _pause),
        FaultKind("kill-follower", "before", "follower", _kill),
        FaultKind("isolate-follower", "before", "follower", _isolate),
        FaultKind("one-way", "before", "link", _one_way),
        FaultKind("bridge", "before", "link", _bridge),
        FaultKind("flapping", "before", "link", _flapping),
        FaultKind("clock-skew", "before", "any", _clock_skew),
        FaultKind("clock-jump", "after", "any", _clock_jump),
    ]
}
HAND_OVERS = ["override", "override-expiring", "score", "deletion", "crash", "none"]
NODE_FAULTS = {
    role: [k.name for k in FAULT_KINDS.values() if k.victim in (role, "link")]
    for role in ("leader", "follower")
}


@dataclass
class Plan:
    """One schedule's choices, all drawn from its own seed (replayable alone)."""

    seed: int
    hand_over: str
    victim_role: str
    faults: list[str]
    agent: bool
    fault_seconds: float
    after_delay: float  # seconds between the hand-over and the "after" faults
    # Inject the "after" faults as soon as the hand-over's first decision is seen committed
    # (b told PendingPrimary or Primary, or a told Secondary) rather than after after_delay.
    after_decision: bool = False

    @classmethod
    def draw(cls, seed: int) -> Plan:
        rng = random.Random(seed)
        victim_role = rng.choice(["leader", "follower"])
        faults = rng.sample(NODE_FAULTS[victim_role], rng.choice([0, 1, 1, 2]))
        for extra in ("drop-replies", "clock-skew", "clock-jump"):
            if rng.random() < 0.35:
                faults.append(extra)
        return cls(
            seed=seed,
            hand_over=rng.choice(HAND_OVERS),
            victim_role=victim_role,
            faults=faults,
            agent=rng.random() < 0.3,
            fault_seconds=rng.uniform(*FAULT_SECONDS),
            after_delay=rng.uniform(0.0, 0.3),
            after_decision=rng.random() < 0.5,
        )


# --------------------------------------------------------------------------- one schedule


@dataclass
class Outcome:
    plan: Plan
    group: str
    started: float
    moved: float | None = None
    ended: float = 0.0
    granted: float | None = None  # b's first Primary answer after the hand-over (received)
    crashed_at: float | None = None
    what: list[str] = field(default_factory=list)
    deleted: bool = False

    def summary(self, since: float) -> dict[str, Any]:
        return {
            "seed": self.plan.seed,
            "group": self.group,
            "hand_over": self.plan.hand_over,
            "agent": self.plan.agent,
            "faults": self.plan.faults,
            "what": self.what,
            "at": round(self.started - since, 2),
            "hand_over_seconds": (
                round(self.granted - self.moved, 2)
                if self.granted is not None and self.moved is not None
                else None
            ),
        }


def create_group(rig: Rig, group: str) -> None:
    body = {"Id": group, "FailoverTimeout": "00:00:02"}
    assert rig.call("POST", API, body).status_code in (200, 201)
    for session in ("a", "b"):
        response = rig.call("POST", f"{API}/{group}/clientsessions", {"Id": session})
        assert response.status_code in (200, 201), response.text
    rig.history.creates += [(group, None), (group, "a"), (group, "b")]


def first_answer(
    history: History, key: tuple[str, str], role: int, after: float, timeout: float
) -> float | None:
    """Receive time of the first ``role`` answer to a request of ``key`` sent after ``after``."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r.received for r in history.of(key) if r.ok and r.role == role and r.sent > after]
        if found:
            return min(found)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def decided(history: History, group: str, after: float, timeout: float) -> float | None:
    """When the hand-over's first decision was seen: ``b`` answered PendingPrimary or
    Primary, or ``a`` answered Secondary, for a request sent after ``after``."""
    deadline = time.monotonic() + timeout
    while True:
        seen = [
            r.received
            for r in history.snapshot()
            if r.group == group
            and r.ok
            and r.sent > after
            and (
                (r.session == "b" and r.role != SECONDARY)
                or (r.session == "a" and r.role == SECONDARY)
            )
        ]
        if seen:
            return min(seen)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


def settle(history: History, group: str, timeout: float) -> None:
    """Wait until every attempt of ``group`` its adapter gave up on has ended (answered late,
    or timed out at the fleet's late_timeout): until then the checker must count it as a
    possible grant, since its answer may still come."""
    deadline = time.monotonic() + timeout
    while True:
        records = [r for r in history.snapshot() if r.group == group]
        ended = {r.request for r in records if r.late}
        open_ = [r for r in records if r.error == GAVE_UP and r.request not in ended]
        if not open_:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(open_)} attempts of {group} still open: {open_[:3]}")
        time.sleep(0.1)


def hand_over(rig: Rig, outcome: Outcome, avoid: frozenset[int]) -> None:
    group, how = outcome.group, outcome.plan.hand_over
    sessions = f"{API}/{group}/clientsessions"
    if how.startswith("override"):
        body: dict[str, Any] = {"Value": "Primary"}
        if how == "override-expiring":
            # Longer than an AVEVA-style hand-over (T + margin + a confirmation), so that b
            # is granted before it expires unless a clock fault ends it early.
            body["ExpirationPeriod"] = "00:00:06"
        response = rig.call("POST", f"{sessions}/b/roleoverride", body, avoid)
        assert response.status_code in (200, 204), response.text
    elif how == "score":
        rig.fleet.adapters[(group, "a")].score = 0
    elif how == "deletion":
        response = rig.call("DELETE", f"{sessions}/a", avoid=avoid)
        # 404: an earlier attempt whose answer was lost (a node cut off mid-call) deleted it.
        assert response.status_code in (200, 204, 404), response.text
        rig.history.creates.remove((group, "a"))  # gone on purpose: P4 owes it no more
        outcome.deleted = True
    elif how == "crash":
        outcome.crashed_at = rig.fleet.crash(group, "a")


def run_schedule(rig: Rig, number: int, plan: Plan) -> Outcome:
    """One hand-over under the plan's faults; every fault is undone before it returns."""
    rng = random.Random(plan.seed ^ 0x5EED)
    group = f"s{number}"
    outcome = Outcome(plan, group, time.monotonic())
    create_group(rig, group)
    source = rig.net.cut_off_source
    rig.fleet.add(group, "a", T / 2, source=source, score=60, agent=plan.agent)
    rig.fleet.add(group, "b", T / 2, offset=1, score=50, agent=plan.agent)
    if first_answer(rig.history, (group, "a"), PRIMARY, 0.0, 15) is None:
        raise AssertionError(f"{group}: a was never granted: {rig.history.of((group, 'a'))[-3:]}")
    first_answer(rig.history, (group, "b"), SECONDARY, 0.0, 5)  # b heard (Secondary) before moving
    leader = rig.cluster.leader_index()
    victim = leader if plan.victim_role == "leader" else _other(leader, rng)
    undo: list[Injected] = []
    try:
        for name in plan.faults:
            if FAULT_KINDS[name].phase == "before":
                undo.append(FAULT_KINDS[name].inject(rig, victim, rng))
        time.sleep(rng.uniform(0, T / 2))  # the faults are in place for a while
        outcome.moved = time.monotonic()
        hand_over(rig, outcome, frozenset({victim}))
        if plan.after_decision:
            decided(rig.history, group, outcome.moved, timeout=3 * T)
        else:
            time.sleep(plan.after_delay)
        for name in plan.faults:
            if FAULT_KINDS[name].phase == "after":
                undo.append(FAULT_KINDS[name].inject(rig, victim, rng))
        time.sleep(plan.fault_seconds)
    finally:
        outcome.what = [i.what for i in undo]
        for injected in reversed(undo):
            injected.undo()
        rig.net.heal()
        for node in rig.cluster.nodes:
            node.signal(signal.SIGCONT)
    rig.cluster.wait_ready(timeout=45, nodes=[0, 1, 2])
    if plan.hand_over != "none" and outcome.moved is not None:
        outcome.granted = first_answer(rig.history, (group, "b"), PRIMARY, outcome.moved, 4 * T)
    else:
        time.sleep(T / 2)
    rig.fleet.crash(group, "a")
    rig.fleet.crash(group, "b")
    outcome.ended = time.monotonic()
    return outcome
