"""Verdict wording: a measurement against its target, as a factor, never "held" for a miss.

Pure functions of numbers (tests/unit/test_bench_verdicts.py). A target met reads
``met (1.7×)`` — the margin it was met by; a target missed reads ``missed by 3.1×`` — how far
the measurement must move to meet it. Absent numbers say so instead of guessing.
"""

from __future__ import annotations

import math

NOT_MEASURED = "not measured"


def factor_text(factor: float) -> str:
    """1.04 → '1.04×' (two digits near 1, where one would round a miss to '1.0×'), 3.14 → '3.1×'."""
    if math.isinf(factor):
        return "∞×"
    return f"{factor:.2f}×" if factor < 1.1 else f"{factor:.1f}×"


def _usable(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def at_least(measured: float | None, target: float | None) -> str:
    """Higher is better (throughput, a ratio to etcd): met when ``measured >= target``."""
    if not _usable(measured) or not _usable(target) or target is None or target <= 0:
        return NOT_MEASURED
    assert measured is not None
    if measured >= target:
        return f"met ({factor_text(measured / target)})"
    if measured <= 0:
        return "missed (nothing measured above 0)"
    return f"missed by {factor_text(target / measured)}"


def at_most(measured: float | None, bound: float | None) -> str:
    """Lower is better (latency, a failover time): met when ``measured <= bound``."""
    if not _usable(measured) or not _usable(bound) or bound is None or bound <= 0:
        return NOT_MEASURED
    assert measured is not None
    if measured <= 0:
        return "met (0)"
    if measured <= bound:
        return f"met ({factor_text(bound / measured)})"
    return f"missed by {factor_text(measured / bound)}"


def no_errors(errors: int | None) -> str:
    if errors is None:
        return NOT_MEASURED
    return "met (0 errors)" if errors == 0 else f"missed: {errors:,} errors"


def combine(*verdicts: str) -> str:
    """All parts of a target: met only if every part is; a miss names the parts that missed."""
    if any(v == NOT_MEASURED for v in verdicts):
        return NOT_MEASURED
    missed = [v for v in verdicts if not v.startswith("met")]
    if not missed:
        return "; ".join(verdicts)
    return "**" + "; ".join(missed) + "**"


def is_met(verdict: str) -> bool:
    return verdict.startswith("met")
