"""bench/render.py and friends: docs/benchmarks.md from a results dict — the configuration above
every table, the --dev column labelled, verdicts as factors, the cost-model fit, the profile
layers, and partial runs merged without older (`--dev`) result formats. No load, no timing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bench import costfit, httpload, measure, render, render_scale, run, summary, systems
from bench.tables import config_text

PRODUCTION = systems.describe(production=True, nodes=3)
DEV = systems.describe(production=False, nodes=3)
ETCD = {"mode": "etcd 3.4", "nodes": 3, "auth": "none", "journal": "fdatasync"}


def _load(rps: float, p99: float) -> dict[str, Any]:
    return {
        "max": {"rps": rps, "p99_ms": 30.0, "non_2xx": 0, "cpu_pct": [100.0, 3.0, 2.0]},
        "half_load": {"target_rate": rps / 2, "p50_ms": 1.0, "p99_ms": p99, "errors": 0},
    }


def _capacity_run(sessions: int, t: float, p99: float, errors: int) -> dict[str, Any]:
    hb = {"target_rate": sessions / (t / 2), "achieved_rate": sessions / (t / 2) - 1,
          "p50_ms": 1290.0, "p90_ms": 1800.0, "p99_ms": p99, "max_ms": 3000.0, "errors": errors,
          "sent": 1, "ok": 1}  # fmt: skip
    return {
        "config": PRODUCTION, "groups": sessions // 2, "sessions": sessions, "T_s": t,
        "connections": 128, "measured_s": 30.0, "register_seconds": 13.0,
        "register_writes_per_s": 2300.0, "rss_mb_empty": [70.0] * 3, "rss_mb_held": [150.0] * 3,
        "cpu_pct_heartbeating": [50.0] * 3, "warmup_load": hb, "heartbeat_load": hb,
        "statuses": {"200": 100, "503": errors},
    }  # fmt: skip


def _cost_point(sessions: int, rate: int, idle: float, loaded: float) -> dict[str, Any]:
    return {"sessions": sessions, "rate": rate, "idle_cpu_pct": [idle, 0.0, 0.0],
            "cpu_pct": [loaded, 0.0, 0.0], "rss_mb": [100.0], "achieved_rate": rate,
            "p50_ms": 1.0, "p99_ms": 5.0, "errors": 0}  # fmt: skip


def _results() -> dict[str, Any]:
    cost = {
        "config": PRODUCTION,
        # idle grows 0.5 % per 10,000 sessions; heartbeats cost 4 % per 1,000/s
        "by_sessions": [_cost_point(n, 500, 1 + 0.5 * n / 10_000, 3 + 0.5 * n / 10_000 + 2)
                        for n in (1_000, 5_000, 20_000)],
        "by_rate": [_cost_point(5_000, r, 1.25, 1.25 + 4 * r / 1_000) for r in (250, 500, 1_000)],
    }  # fmt: skip
    return {
        "machine": {"cpus": 2},
        "sources": {"throughput": "T1", "capacity": "T1", "costmodel": "T1"},
        "items": {
            "throughput": {
                "cfs": {
                    "config": PRODUCTION,
                    "sessions": 5000,
                    "leader": _load(7830, 29.0),
                    "follower": _load(5148, 490.0),
                },
                "cfs_dev": {
                    "config": DEV,
                    "sessions": 5000,
                    "leader": _load(11862, 30.0),
                    "follower": _load(5801, 31.0),
                },
                "etcd": {
                    "config": ETCD,
                    "leases": 5000,
                    "leader": _load(14097, 9.0),
                    "follower": _load(8350, 11.0),
                },
            },  # fmt: skip
            "capacity": {
                "standard": _capacity_run(20_000, 15.0, 2070.0, 35),
                "stretch": _capacity_run(100_000, 60.0, 40.0, 0),
            },
            "costmodel": {
                "rate": 500,
                "fixed_sessions": 5000,
                "T": "00:30:00",
                "idle_seconds": 5,
                "load_seconds": 10,
                "nodes": {"3": cost},
            },  # fmt: skip
        },
    }


def test_every_table_has_its_configuration_above_it() -> None:
    text = render.markdown(_results(), [])
    sections = re.split(r"^#{2,3} ", text, flags=re.M)
    with_tables = [s for s in sections if "\n|" in s]
    assert len(with_tables) >= 5
    for section in with_tables:
        if section.startswith("Summary"):
            continue  # one row per target; the tables below name their configurations
        head = section.split("\n|", 1)[0]
        assert "Configuration" in head, section[:200]


def test_production_configuration_is_spelled_out() -> None:
    line = config_text(PRODUCTION)
    for part in ("**production**", "3 nodes", "auth required", "Raft password", "fdatasync"):
        assert part in line
    assert "--dev" not in line
    assert "no Raft password" in config_text(DEV) and "`--dev`" in config_text(DEV)
    assert "not synced" in config_text(systems.describe(True, 3, ["--unsafe-no-fsync"]))


def test_dev_column_is_labelled_and_compared_with_etcd() -> None:
    text = render.markdown(_results(), [])
    row = next(line for line in text.splitlines() if "`--dev` (extra), at the leader" in line)
    assert "11,862" in row and "0.84×" in row


def test_summary_reports_misses_as_factors_never_held() -> None:
    text = summary.section(_results())
    assert "held" not in text
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    leader = next(v for k, v in rows.items() if "at the leader ≥ 1.5" in k)
    assert "0.56×" in leader and "missed by 2.7×" in leader
    follower = next(v for k, v in rows.items() if "through a follower ≥ 1.0" in k)
    assert "missed by 1.6×" in follower
    half = next(v for k, v in rows.items() if "half of the maximum, follower" in k)
    assert "missed by 49.0×" in half
    capacity = next(v for k, v in rows.items() if k.startswith("| 20,000 sessions"))
    assert "missed by 41.4×" in capacity and "missed: 35 errors" in capacity
    stretch = next(v for k, v in rows.items() if "stretch: 100,000 sessions" in k)
    assert "met (1.2×); met (0 errors)" in stretch
    targets = [v for k, v in rows.items() if k not in ("| target", "|---|---|---|---|")]
    assert targets and all("`make bench BENCH=" in v for v in targets)


def test_cost_model_fit_separates_sessions_from_heartbeats() -> None:
    run_ = _results()["items"]["costmodel"]["nodes"]["3"]
    figures = costfit.cost_figures(run_)
    assert figures["idle_cpu_per_10k_sessions"] == pytest.approx(0.5)
    assert figures["cpu_per_1k_heartbeats_per_s"] == pytest.approx(4.0)
    assert costfit.slope([1.0], [2.0]) is None
    text = render_scale.costmodel(_results()["items"]["costmodel"], "T1")
    assert "0.5 % per 10,000 live sessions" in text and "4.0 % per 1,000 heartbeats/s" in text


def test_profile_samples_are_attributed_to_the_nearest_layer(tmp_path: Path) -> None:
    site = "/venv/lib/python3.11/site-packages"
    stacks = [
        "run (/usr/lib/python3.11/asyncio/runners.py:1);"
        "heartbeat (/w/cfs_cluster/cluster/liveness.py:10);"
        "dumps (/usr/lib/python3.11/json/__init__.py:5) 30",
        "_run (/w/cfs_cluster/api/frontdoor.py:3);check (/w/cfs_cluster/security/auth.py:9) 20",
        f"send ({site}/uvicorn/protocols/http/httptools_impl.py:1) 30",
        "data_received (/w/cfs_cluster/api/connection.py:6);"
        "_report (/w/cfs_cluster/api/fastlane.py:7) 4",
        "data_received (/w/cfs_cluster/api/connection.py:6) 6",
        f"_onTick ({site}/pysyncobj/syncobj.py:1);loads ({site}/pysyncobj/pickle.py:2) 5",
        "Runner.run (/usr/lib/python3.11/asyncio/runners.py:118) 5",
    ]
    path = tmp_path / "p.txt"
    path.write_text("\n".join(stacks) + "\n")
    areas = {a["function"]: a["pct"] for a in measure.summarize_profile(path)["areas"]}
    assert areas == {
        "HTTP server (uvicorn, httptools, api/connection.py)": 36.0,
        "API handlers (front door, heartbeat lane, routes)": 4.0,
        "liveness (heartbeat bookkeeping, checkpoints, sweep)": 30.0,
        "auth (credentials, tokens, rate limits)": 20.0,
        "pysyncobj (Raft, pickling, encryption)": 5.0,
        "waiting (event loop, Raft poller)": 5.0,
    }


def test_the_load_generators_send_the_credentials() -> None:
    headers = systems.basic_header("bench-admin", "pw")
    raw = httpload.encode("127.0.0.1", 1, "POST", "/x", b"{}", headers)
    assert b"\r\nAuthorization: Basic YmVuY2gtYWRtaW46cHc=\r\n" in raw
    assert raw.endswith(b"Content-Length: 2\r\n\r\n{}")


def test_partial_runs_merge_without_older_formats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run, "RESULTS", tmp_path)
    old = {"timestamp": "A", "machine": {}, "items": {"reads": {"dev": True}}}
    full = {"format": run.FORMAT, "timestamp": "B", "machine": {},
            "items": {"capacity": {"x": 1}, "failover": {"error": "boom"}}}  # fmt: skip
    earlier_failover = {"format": run.FORMAT, "timestamp": "AA", "machine": {},
                        "items": {"failover": {"y": 2}}}  # fmt: skip
    for data in (old, earlier_failover, full):
        (tmp_path / f"{data['timestamp']}.json").write_text(json.dumps(data))
    newest = {"format": run.FORMAT, "timestamp": "C", "machine": {"cpus": 2},
              "items": {"capacity": {"x": 3}}}  # fmt: skip
    merged = run.merged_results(newest)
    assert "reads" not in merged["items"]  # a `--dev`-era result is not mixed in
    assert merged["items"]["capacity"] == {"x": 3} and merged["sources"]["capacity"] == "C"
    assert merged["items"]["failover"] == {"y": 2}  # an error does not hide an earlier result


def test_failover_trials_that_never_failed_over_are_a_miss_not_a_missing_row() -> None:
    timing = {"median": 2.4, "p99": 2.5, "max": 2.5, "min": 2.3, "n": 24}
    failover = {
        "T_s": 2.0,
        "bounds_s": {"T+T/2": 3.0, "T+1": 3.0},
        "cfs": {"trials": 24, "answered_s": timing},
        "cfs_agent": {"trials": 24, "raw": [{"error": "agent not Primary"}] * 24},
    }
    rows = summary._failover_rows(failover)
    agent = next(r for r in rows if "our agent" in r[0])
    assert agent[2] == "**missed**: 24 of 24 trials never got there"
    polling = next(r for r in rows if "polling adapter" in r[0])
    assert polling[2] == "met (1.2×)"
