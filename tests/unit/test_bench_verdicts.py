"""bench/verdicts.py: a target against its measurement as a factor — never "held" for a miss.

Pure functions, no load, no timing: the numbers are the ones issue 16 reported."""

from __future__ import annotations

import math

import pytest

from bench import verdicts


@pytest.mark.parametrize(
    ("measured", "target", "expected"),
    [
        (1.7, 1.0, "met (1.7×)"),
        (1.5, 1.5, "met (1.00×)"),
        (0.56, 1.5, "missed by 2.7×"),  # issue 16: 7,830 vs 14,097 keep-alives, target 1.5×
        (0.97, 1.0, "missed by 1.03×"),  # near 1: two digits, so a miss never reads "1.0×"
        (0.0, 1.0, "missed (nothing measured above 0)"),
    ],
)
def test_at_least_states_the_factor(measured: float, target: float, expected: str) -> None:
    assert verdicts.at_least(measured, target) == expected


@pytest.mark.parametrize(
    ("measured", "bound", "expected"),
    [
        (25.0, 50.0, "met (2.0×)"),
        (50.0, 50.0, "met (1.00×)"),
        (2070.0, 50.0, "missed by 41.4×"),  # issue 16: p99 2.07 s against 50 ms
        (31.0, 10.0, "missed by 3.1×"),
        (0.0, 3.0, "met (0)"),
    ],
)
def test_at_most_states_the_factor(measured: float, bound: float, expected: str) -> None:
    assert verdicts.at_most(measured, bound) == expected


@pytest.mark.parametrize("value", [None, math.nan])
def test_absent_numbers_are_not_measured(value: float | None) -> None:
    assert verdicts.at_least(value, 1.5) == verdicts.NOT_MEASURED
    assert verdicts.at_most(value, 10.0) == verdicts.NOT_MEASURED
    assert verdicts.at_most(5.0, value) == verdicts.NOT_MEASURED


def test_errors_count_against_the_target() -> None:
    assert verdicts.no_errors(0) == "met (0 errors)"
    assert verdicts.no_errors(35) == "missed: 35 errors"
    assert verdicts.no_errors(None) == verdicts.NOT_MEASURED


def test_combined_target_is_met_only_when_every_part_is() -> None:
    met = verdicts.combine(verdicts.at_most(20.0, 50.0), verdicts.no_errors(0))
    assert met == "met (2.5×); met (0 errors)"
    assert verdicts.is_met(met)
    # issue 16's `make bench BENCH=capacity`: p99 2.07 s, 35 errors — once reported as "held"
    missed = verdicts.combine(verdicts.at_most(2070.0, 50.0), verdicts.no_errors(35))
    assert missed == "**missed by 41.4×; missed: 35 errors**"
    assert not verdicts.is_met(missed)
    assert "held" not in missed
    partly = verdicts.combine(verdicts.at_most(20.0, 50.0), verdicts.no_errors(3))
    assert partly == "**missed: 3 errors**"
    assert verdicts.combine("met (2.0×)", verdicts.NOT_MEASURED) == verdicts.NOT_MEASURED
