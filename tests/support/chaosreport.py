"""The chaos report: P1/P2/P3/P4 per schedule and per fault kind, as JSON and a table.

Each schedule (chaoskit.Outcome) is judged on the recorded history:

- P1: overlapping possible grants in its own group, and in the long-lived groups during it;
- P2: role or epoch changes of the long-lived groups (their adapters never stop) during it;
- P3: after a primary adapter crash, the secondary's promotion against T + T/2 + 1 s from the
  crashed adapter's last heartbeat (the emulated adapters poll like AVEVA adapters; they do
  not long-poll);
- P4: acknowledged creates of its window missing on a node at the end;
- answers other than 200/503 (404 for a session the schedule deleted is expected).

A fault kind's row counts every schedule that contained it, alone or composed with others.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from support.chaoskit import FAULT_KINDS, HAND_OVERS, Outcome, T
from support.history import Record, Violation, promotion_delay, role_changes, server_errors

P3_BOUND = T + T / 2 + 1.0


def judge(
    outcome: Outcome,
    records: list[Record],
    violations: list[Violation],
    long_groups: Iterable[str],
    missing: list[str],
    since: float,
) -> dict[str, Any]:
    """The verdict on one schedule (``missing``: its window's creates absent at the end)."""
    lived = set(long_groups)
    start, end = outcome.started, outcome.ended
    p1 = [
        str(v)
        for v in violations
        if v.group == outcome.group
        or (v.group in lived and v.second.start <= end and v.first.end >= start)
    ]
    background = [r for r in records if r.group in lived and r.sent <= end]
    p2 = role_changes(background, start)
    own = [r for r in records if r.group == outcome.group]
    unexpected = [
        f"{r.group}/{r.session} {r.status} {r.error}"
        for r in server_errors(own + [r for r in background if r.sent >= start])
        if not (outcome.deleted and r.session == "a" and r.status == 404)
    ]
    p3: float | None = None
    if outcome.crashed_at is not None:
        p3 = promotion_delay(records, outcome.group, "a", outcome.crashed_at)
    verdict = outcome.summary(since)
    verdict.update(
        p1=p1,
        p2=p2,
        p3_promotion_seconds=None if p3 is None else round(p3, 2),
        p3_missed=outcome.crashed_at is not None and (p3 is None or p3 > P3_BOUND),
        p4_missing=missing,
        unexpected=unexpected[:10],
    )
    return verdict


def by_kind(verdicts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per fault kind and per hand-over kind: how often, and what each property saw."""
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for verdict in verdicts:
        for fault in verdict["faults"] or ["(no fault)"]:
            rows[fault].append(verdict)
        rows[f"hand-over: {verdict['hand_over']}"].append(verdict)
    order = [*FAULT_KINDS, "(no fault)", *(f"hand-over: {h}" for h in HAND_OVERS)]
    return {name: _row(rows[name]) for name in order if rows.get(name)}


def _row(verdicts: list[dict[str, Any]]) -> dict[str, Any]:
    handovers = [v["hand_over_seconds"] for v in verdicts if v["hand_over_seconds"] is not None]
    promotions = [v["p3_promotion_seconds"] for v in verdicts if v["p3_promotion_seconds"]]
    crashes = sum(1 for v in verdicts if v["hand_over"] == "crash")
    return {
        "schedules": len(verdicts),
        "p1_violations": sum(len(v["p1"]) for v in verdicts),
        "p2_role_changes": sum(len(v["p2"]) for v in verdicts),
        "p3_crashes": crashes,
        "p3_missed": sum(1 for v in verdicts if v["p3_missed"]),
        "p3_max_seconds": max(promotions) if promotions else None,
        "p4_missing": sum(len(v["p4_missing"]) for v in verdicts),
        "unexpected_answers": sum(len(v["unexpected"]) for v in verdicts),
        "hand_over_median": round(statistics.median(handovers), 2) if handovers else None,
        "hand_over_max": max(handovers) if handovers else None,
        "hand_over_never": sum(
            1 for v in verdicts if v["hand_over"] != "none" and v["hand_over_seconds"] is None
        ),
    }


def table(rows: dict[str, dict[str, Any]]) -> str:
    """The markdown table docs/safety.md quotes."""
    head = (
        "| fault kind | schedules | P1 overlaps | P2 role changes | P3 missed / crashes "
        "(max s) | P4 missing | other answers | hand-over median / max s (never) |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    lines = []
    for name, row in rows.items():
        p3 = f"{row['p3_missed']} / {row['p3_crashes']}"
        if row["p3_max_seconds"] is not None:
            p3 += f" ({row['p3_max_seconds']:.2f})"
        hand = (
            f"{row['hand_over_median']:.2f} / {row['hand_over_max']:.2f}"
            if row["hand_over_median"] is not None
            else "-"
        )
        lines.append(
            f"| {name} | {row['schedules']} | {row['p1_violations']} | {row['p2_role_changes']} "
            f"| {p3} | {row['p4_missing']} | {row['unexpected_answers']} "
            f"| {hand} ({row['hand_over_never']}) |"
        )
    return head + "\n".join(lines) + "\n"
