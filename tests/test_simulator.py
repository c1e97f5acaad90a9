"""`cfs simulate` (cfs_cluster/simulator/): continuity figures per failover mode.

The pure figures (gaps, duplicates, failover counting) are tested on their own; then every mode
runs side by side against one real 3-node cluster (T = 3 s, each group's primary crashed 4 s into
the data) and the report is checked against the sink's own counts and the takeover times: hot
mode loses nothing across the crash, warm and cold lose exactly the values produced while no
adapter held Primary, which the takeover time predicts.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from support.clusterkit import Cluster

from cfs_cluster.agent import ClientRole
from cfs_cluster.simulator import (
    AdapterRoleChange,
    SimulationSettings,
    continuity,
    format_report,
    run_simulation,
    spread,
    takeovers,
)

API = "/api/v1/clientfailover"
PRIMARY, SECONDARY = ClientRole.Primary, ClientRole.Secondary
T = 3.0  # FailoverTimeout of the cluster runs, seconds
CRASH_AT = 4.0  # seconds into the data
DURATION = 11.0  # seconds of data: the takeover (<= T + 0.3 s + a round trip) fits with room


class TestFigures:
    """Gaps, duplicates, spreads and failovers, computed from counts and role changes."""

    def test_gaps_are_missing_sequence_numbers_and_duplicates_extra_deliveries(self) -> None:
        counts = Counter({0: 1, 1: 2, 3: 1, 4: 3})
        figures = continuity(6, counts)
        assert figures.missing == (2, 5)
        assert (figures.gaps, figures.duplicates, figures.delivered) == (2, 3, 4)

    def test_nothing_delivered_is_all_gap(self) -> None:
        assert continuity(3, {}).gaps == 3

    def test_spread(self) -> None:
        assert spread([]) == {"median": None, "max": None}
        assert spread([1.0, 3.0, 2.0]) == {"median": 2.0, "max": 3.0}

    def test_a_crash_then_a_promotion_elsewhere_is_one_failover(self) -> None:
        events = [AdapterRoleChange(17.5, "b", SECONDARY, PRIMARY, "heartbeat answered Primary")]
        figures = takeovers(events, primary_at_start="a", crashed="a", crashed_at=10.0)
        assert (figures.failovers, figures.demotions, figures.takeover_seconds) == (1, 0, 7.5)

    def test_a_lapse_and_regrant_of_the_same_adapter_is_a_demotion_not_a_failover(self) -> None:
        events = [
            AdapterRoleChange(6.0, "a", SECONDARY, PRIMARY, "heartbeat answered Primary"),
            AdapterRoleChange(5.0, "a", PRIMARY, SECONDARY, "Primary grant lapsed without renewal"),
        ]
        figures = takeovers(events, primary_at_start="a")
        assert (figures.failovers, figures.demotions, figures.takeover_seconds) == (0, 1, None)

    def test_no_takeover_before_the_end_is_reported_as_none(self) -> None:
        assert takeovers([], "a", crashed="a", crashed_at=3.0).takeover_seconds is None

    @pytest.mark.parametrize(
        "changes",
        [
            {"modes": ("tepid",)},
            {"timeout": 0.5},  # the service refuses T below 1 s
            {"duration": 10.0, "fail_primary_after": 10.0},  # the crash would come after the data
            {"endpoints": ()},
        ],
    )
    def test_settings_refuse_what_cannot_run(self, changes: dict[str, Any]) -> None:
        with pytest.raises(ValueError):
            SimulationSettings(**{"endpoints": ("http://h" + API,), **changes})


# =========================================================================== against a cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("sim-cluster")) as running:
        yield running


def _endpoints(cluster: Cluster) -> tuple[str, ...]:
    return tuple(url + API for url in cluster.urls)


@pytest.fixture(scope="module")
def crash_run(cluster: Cluster) -> dict[str, Any]:
    """Every mode side by side, 3 groups of 2 adapters each, every primary crashed once."""
    settings = SimulationSettings(
        endpoints=_endpoints(cluster),
        groups=3,
        adapters_per_group=2,
        modes=("hot", "warm", "cold"),
        timeout=T,
        duration=DURATION,
        fail_primary_after=CRASH_AT,
    )
    summary = asyncio.run(run_simulation(settings))
    print(json.dumps({m: {k: v for k, v in s.items() if k != "per_group"}
                      for m, s in summary["modes"].items()}))  # fmt: skip
    return summary


@pytest.mark.cluster
class TestPrimaryCrash:
    def test_every_crash_is_one_takeover_within_the_grant_expiry(
        self, crash_run: dict[str, Any]
    ) -> None:
        for mode, figures in crash_run["modes"].items():
            assert figures["crashes"] == figures["groups"] == 3, (mode, figures)
            assert figures["failovers"] == 3 and figures["no_takeover"] == 0, (mode, figures)
            assert figures["demotions"] == 0, (mode, figures)  # no live primary lost its grant
            for group in figures["per_group"]:
                # The grant is released T + 0.3 s after the primary's last heartbeat, which was
                # at most T/2 (plus a round trip) before the crash.
                assert T / 2 - 0.3 <= group["takeover_seconds"] <= T + 2.0, (mode, group)

    def test_the_report_is_the_sinks_own_count(self, crash_run: dict[str, Any]) -> None:
        for mode, figures in crash_run["modes"].items():
            for group in figures["per_group"]:
                assert group["produced"] == figures["values_per_group"] == DURATION
                assert (
                    group["gaps"] == len(group["missing"]) == group["produced"] - group["delivered"]
                )
            assert figures["gaps"] == sum(g["gaps"] for g in figures["per_group"]), mode
            assert figures["duplicates"] == sum(g["duplicates"] for g in figures["per_group"])

    def test_hot_loses_nothing_across_a_primary_crash(self, crash_run: dict[str, Any]) -> None:
        hot = crash_run["modes"]["hot"]
        assert hot["gaps"] == 0, hot
        for group in hot["per_group"]:
            assert group["delivered"] == group["produced"], group
            # The buffer is trimmed only to LastDataProcessedTime - T/2, so the new primary
            # re-sends at least the value the old one last reported: duplicates, by design.
            assert 1 <= group["duplicates"] <= CRASH_AT + 1, group

    @pytest.mark.parametrize("mode", ["warm", "cold"])
    def test_warm_and_cold_lose_the_values_of_the_takeover(
        self, crash_run: dict[str, Any], mode: str
    ) -> None:
        figures = crash_run["modes"][mode]
        assert figures["duplicates"] == 0, figures  # a secondary sends nothing it collected
        for group in figures["per_group"]:
            gaps, takeover = group["gaps"], group["takeover_seconds"]
            # One value per second: the values produced between the crash and the promotion.
            assert math.floor(takeover) - 1 <= gaps <= math.ceil(takeover) + 1, group
            # ... and they are one run starting at the crash, not scattered losses.
            first = group["missing"][0]
            assert first in (CRASH_AT, CRASH_AT + 1), group
            assert group["missing"] == list(range(first, first + gaps)), group

    def test_the_table_has_a_row_per_mode(self, crash_run: dict[str, Any]) -> None:
        lines = format_report(crash_run).splitlines()
        assert "T=00:00:03" in lines[0] and "primary crash at 4 s" in lines[0]
        rows = {line.split()[0]: line.split() for line in lines[2:]}
        assert set(rows) == {"hot", "warm", "cold"}
        hot = crash_run["modes"]["hot"]
        assert rows["hot"][1:4] == [str(3 * hot["values_per_group"]), "3", "3"]


@pytest.mark.cluster
def test_cli_prints_a_json_summary(cluster: Cluster) -> None:
    command = [
        sys.executable, "-m", "cfs_cluster", "simulate",
        "--endpoint", ",".join(_endpoints(cluster)),
        "--groups", "1", "--adapters-per-group", "2", "--mode", "hot",
        "--timeout", "00:00:02", "--duration", "3", "--json",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    summary: dict[str, Any] = json.loads(done.stdout)
    hot = summary["modes"]["hot"]
    assert summary["settings"]["timeout"] == "00:00:02"
    assert (hot["values_per_group"], hot["gaps"], hot["crashes"], hot["failovers"]) == (3, 0, 0, 0)
    assert hot["takeover_seconds"] == {"median": None, "max": None}


def test_cli_refuses_a_crash_after_the_data() -> None:
    command = [
        sys.executable, "-m", "cfs_cluster", "simulate",
        "--endpoint", "http://127.0.0.1:9" + API,
        "--duration", "5", "--fail-primary-after", "5",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--fail-primary-after" in done.stderr
