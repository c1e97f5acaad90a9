"""Prometheus metrics of one node (``GET /metrics``).

Gauges that describe state (Raft, groups, sessions, overrides) are computed at scrape time from
the replicated state and pysyncobj's status, so they cost nothing between scrapes. Events
(heartbeats, leader changes, role changes, OMF posts) are counters bumped where they happen; on
the heartbeat path that is one counter and one histogram observation.

Every node applies every command, so ``cfs_role_changes_total`` counts the cluster's role
changes as this node applied them (a restarted node counts its journal replay again; Prometheus'
``increase()`` treats the reset as a restart).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cfs_cluster import engine
from cfs_cluster.ops.gcpolicy import PAUSES
from cfs_cluster.protocol.wire import RoleOverride, unix_from_ticks

__all__ = ["AUTH_FAILURE_REASONS", "CONTENT_TYPE", "Metrics", "MetricsSource", "reason_category"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_RAFT_STATES = {0: "follower", 1: "candidate", 2: "leader"}
AUTH_FAILURE_REASONS = ("no_credentials", "bad_credentials", "forbidden", "backoff")
# Role-change reasons are free text with ids and scores in them; labels need a small fixed set.
_REASONS = (
    ("Role override", "role_override"),
    ("Only one client", "only_client"),
    ("is stale", "primary_stale"),
    ("yields the role", "primary_yielded"),
    ("is higher than the primary", "higher_score"),
    ("Highest FailoverScore", "highest_score"),
    ("was deleted", "session_deleted"),
    ("No live client", "no_live_client"),
)


def reason_category(reason: str) -> str:
    """A bounded label for a role-change reason (the full text is in the events history)."""
    for needle, category in _REASONS:
        if needle in reason:
            return category
    return "other"


@dataclass(frozen=True)
class MetricsSource:
    """What the collector reads at scrape time (callables, so this module needs no Node)."""

    raft_status: Callable[[], dict[str, Any]]
    read_state: Callable[[], AbstractContextManager[engine.ClusterState]]
    is_ready: Callable[[], bool]


class Metrics:
    """The registry of one node; a private registry so several nodes can live in one process."""

    def __init__(self, source: MetricsSource) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.heartbeats = Counter(
            "cfs_heartbeats", "Heartbeats received from adapters, by how they were answered: "
            "'local' (this node leads) or 'relayed' (forwarded to the leader).",
            ["path"], registry=r,
        )  # fmt: skip
        self.heartbeat_errors = Counter(
            "cfs_heartbeat_errors", "Heartbeats answered with an error, by HTTP status.",
            ["status"], registry=r,
        )  # fmt: skip
        self.heartbeat_latency = Histogram(
            "cfs_heartbeat_latency_seconds", "Time to answer a heartbeat inside the node.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )  # fmt: skip
        self.leader_changes = Counter(
            "cfs_raft_leader_changes", "Times this node saw the Raft leader change.", registry=r
        )
        self.role_changes = Counter(
            "cfs_role_changes", "Changes of a group's Primary (failovers included), by reason.",
            ["reason"], registry=r,
        )  # fmt: skip
        self.omf_posts = Counter(
            "cfs_omf_posts", "OMF health/diagnostics posts by endpoint and outcome "
            "('success', 'failure', 'conflict', 'rejected').",
            ["endpoint", "outcome"], registry=r,
        )  # fmt: skip
        self.omf_buffered = Counter(
            "cfs_omf_dropped_messages", "OMF messages dropped because a buffer was full.",
            ["endpoint"], registry=r,
        )  # fmt: skip
        self.auth_failures = Counter(
            "cfs_auth_failures", "Requests refused by authentication or authorization: "
            "'no_credentials', 'bad_credentials' (401), 'forbidden' (403), 'backoff' (429).",
            ["reason"], registry=r,
        )  # fmt: skip
        for reason in AUTH_FAILURE_REASONS:  # exported at 0, so rate() works from the start
            self.auth_failures.labels(reason)
        # Children resolved once: labels() per heartbeat would cost a dict lookup under a lock.
        self._heartbeat_paths = {p: self.heartbeats.labels(p) for p in ("local", "relayed")}
        r.register(_StateCollector(source))
        self._leader: object = None
        self._seen_events: dict[str, int] = {}

    # ----------------------------------------------------------------- hooks

    def observe_heartbeat(self, path: str, started: float) -> None:
        self._heartbeat_paths[path].inc()
        self.heartbeat_latency.observe(time.perf_counter() - started)

    def observe_auth_failure(self, reason: str) -> None:
        self.auth_failures.labels(reason).inc()

    def observe_leader(self, leader: str | None) -> None:
        """Called with the current leader; counts changes between known leaders."""
        if leader is not None and leader != self._leader:
            if self._leader is not None:
                self.leader_changes.inc()
            self._leader = leader

    def observe_applied(self, command: engine.Command, state: engine.ClusterState) -> None:
        """Count role events the command appended (tick thread; reads one group)."""
        group_id = getattr(command, "group_id", None)
        if not isinstance(group_id, str):
            return
        group = state.groups.get(group_id)
        if group is None:
            self._seen_events.pop(group_id, None)
            return
        if not group.events:
            return
        last = group.events[-1]
        marker = hash((last.time, last.epoch, last.reason, last.new_primary))
        if self._seen_events.get(group_id) != marker:
            self._seen_events[group_id] = marker
            self.role_changes.labels(reason_category(last.reason)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, source: MetricsSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        yield from self._raft()
        yield from self._groups()
        yield from _garbage_collector()

    def _raft(self) -> Iterator[Metric]:
        status = self._source.raft_status()
        state = GaugeMetricFamily(
            "cfs_raft_state", "1 for this node's current Raft state.", labels=["state"]
        )
        for code, name in _RAFT_STATES.items():
            state.add_metric([name], 1.0 if status.get("state") == code else 0.0)
        yield state
        commit = int(status.get("commit_idx") or 0)
        applied = int(status.get("last_applied") or 0)
        leader_commit = int(status.get("leader_commit_idx") or commit)
        yield _gauge("cfs_raft_term", "Current Raft term.", status.get("raft_term") or 0)
        yield _gauge("cfs_raft_commit_index", "Raft commit index known here.", commit)
        yield _gauge("cfs_raft_applied_index", "Raft index applied to the state here.", applied)
        yield _gauge(
            "cfs_raft_commit_lag", "Entries the leader committed that this node has not yet "
            "learned are committed.", max(0, leader_commit - commit),
        )  # fmt: skip
        yield _gauge(
            "cfs_raft_apply_lag",
            "Committed entries not yet applied here.",
            max(0, commit - applied),
        )
        yield _gauge(
            "cfs_raft_has_quorum", "1 when this node sees a quorum.", bool(status.get("has_quorum"))
        )
        yield _gauge("cfs_ready", "1 when /readyz answers 200.", self._source.is_ready())
        yield _gauge(
            "cfs_storage_writable", "0 while this node cannot write its journal (disk full, "
            "I/O error): writes are refused.", bool(status.get("storage_writable", True)),
        )  # fmt: skip
        yield CounterMetricFamily(
            "cfs_journal_syncs", "fdatasync calls on the Raft journal (one per group commit).",
            value=float(status.get("journal_syncs") or 0),
        )  # fmt: skip
        yield CounterMetricFamily(
            "cfs_storage_refusals", "Journal, term or snapshot writes refused (disk full, I/O "
            "error).", value=float(status.get("storage_refusals") or 0),
        )  # fmt: skip

    def _groups(self) -> Iterator[Metric]:
        now = time.time()
        with self._source.read_state() as state:
            groups = list(state.groups.values())
            sessions = sum(len(g.sessions) for g in groups)
            without = sum(1 for g in groups if g.sessions and g.primary is None)
            overrides = sum(
                1 for g in groups for s in g.sessions.values() if _override_active(s, now)
            )
        yield _gauge("cfs_groups", "Failover groups configured.", len(groups))
        yield _gauge("cfs_sessions", "Client sessions registered.", sessions)
        yield _gauge(
            "cfs_groups_without_primary", "Groups that have sessions but no Primary.", without
        )
        yield _gauge("cfs_role_overrides_active", "Unexpired Primary role overrides.", overrides)


def _override_active(session: engine.Session, now: float) -> bool:
    if session.override != RoleOverride.Primary:
        return False
    expiry = session.override_expiry
    return expiry is None or unix_from_ticks(expiry) > now


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


def _garbage_collector() -> Iterator[Metric]:
    """Python's cyclic collector stops the whole node while it runs (ops/gcpolicy.py)."""
    collections = CounterMetricFamily(
        "cfs_gc_collections", "Cyclic garbage collections, by generation.", labels=["generation"]
    )
    seconds = CounterMetricFamily(
        "cfs_gc_pause_seconds", "Seconds the node stood still in the cyclic garbage collector, "
        "by generation.", labels=["generation"],
    )  # fmt: skip
    for generation in range(3):
        collections.add_metric([str(generation)], PAUSES.counts[generation])
        seconds.add_metric([str(generation)], PAUSES.seconds[generation])
    yield collections
    yield seconds
    yield _gauge(
        "cfs_gc_longest_pause_seconds", "The longest cyclic garbage collection so far.",
        PAUSES.longest,
    )  # fmt: skip
