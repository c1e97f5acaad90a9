"""Membership changes cause no election (issue 13 item 7).

Done as docs/operations.md says: the new node is started with ``--peers`` naming the members
and left running for a while (an operator starts it, then types the add), then added; later it
is removed and, again for a while, left running. Emulated adapters heartbeat through the
original three nodes all along. Neither the add nor the removal, nor the node running outside
the configuration before and after, may change the Raft term (an election gives every session
a fresh grace and costs a failed-heartbeat span), and the history checker must find no role or
epoch change and no overlapping grants.
"""

from __future__ import annotations

import time

import pytest
from support.clusterkit import Cluster
from support.faults import check_safety, create, report, start_adapters, wait_stable
from support.history import Fleet, History

pytestmark = pytest.mark.cluster

MEMBERS = "/api/v1/cluster/members"
# Outside the configuration for several election timeouts (raft_max_timeout = 1 s): long
# enough for a node that campaigns to have done so a few times.
OUTSIDE = 4.0


def _terms(cluster: Cluster, indexes: list[int]) -> dict[str, int | None]:
    """Each listed node's own Raft term (None when it does not answer)."""
    terms: dict[str, int | None] = {}
    for i in indexes:
        status = cluster.status(i)
        terms[cluster.nodes[i].node_id] = None if status is None else status.get("Term")
    return terms


def _watch_terms(
    cluster: Cluster, indexes: list[int], seconds: float
) -> list[dict[str, int | None]]:
    """Sample every listed node's term for ``seconds`` (the adapters run meanwhile)."""
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(_terms(cluster, indexes))
        time.sleep(0.2)
    return samples


def test_adding_and_removing_a_member_under_load_changes_no_term(cluster: Cluster) -> None:
    history = History()
    create(cluster, history)
    members = [0, 1, 2]
    leader = cluster.leader_index()
    (term,) = set(_terms(cluster, members).values())
    assert term is not None
    with Fleet(cluster.urls[:3], history) as fleet:
        start_adapters(fleet)
        wait_stable(history)
        since = time.monotonic()

        # Started as documented, before the add; it dials the members itself (clusterkit).
        fourth = cluster.spawn(dials_out=True)
        before_add = _watch_terms(cluster, [*members, fourth], OUTSIDE)
        added = cluster.client.post(
            cluster.nodes[leader].url + MEMBERS, json={"Raft": cluster.nodes[fourth].raft}
        )
        assert added.status_code == 201, added.text
        assert added.json()["CaughtUp"] is True, added.text
        cluster.wait_ready(timeout=20, nodes=[*members, fourth])
        as_member = _watch_terms(cluster, [*members, fourth], 2.0)

        removed = cluster.client.delete(
            cluster.nodes[leader].url + f"{MEMBERS}/{cluster.nodes[fourth].node_id}"
        )
        assert removed.status_code == 200, removed.text
        # Not stopped yet: a removed node that keeps running must not disrupt either.
        after_removal = _watch_terms(cluster, [*members, fourth], OUTSIDE)
        cluster.nodes[fourth].terminate()
        assert cluster.leader_index() == leader

    report("add and remove a member", history, since)
    check_safety(history, since)
    outside = {cluster.nodes[fourth].node_id}
    problems = []
    for phase, samples in (
        ("before the add", before_add),
        ("as a member", as_member),
        ("after the removal", after_removal),
    ):
        print(f"[{phase}] last terms {samples[-1]}")
        for sample in samples:
            # Members stay in the term they started in; the outside node never goes past it
            # (campaigning raises its own term first). None: it did not answer.
            moved = {
                node: t
                for node, t in sample.items()
                if t is not None and t != term and not (node in outside and t < term)
            }
            if moved:
                problems.append(f"{phase}: terms {sample}")
                break
    assert not problems, f"expected term {term} throughout: {problems}"
