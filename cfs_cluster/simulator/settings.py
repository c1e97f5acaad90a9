"""What one `cfs simulate` run does: endpoints, groups per mode, timeout, duration, crash time."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

MODES = ("hot", "warm", "cold")
SETTLE_TIMEOUT_FACTOR = 3.0  # wait up to 3 T (+5 s) for every group's first primary
MIN_TIMEOUT = 1.0  # the service refuses a FailoverTimeout below 00:00:01


@dataclass(frozen=True)
class SimulationSettings:
    endpoints: tuple[str, ...]
    groups: int = 1
    adapters_per_group: int = 2
    modes: tuple[str, ...] = ("hot",)
    timeout: float = 15.0  # FailoverTimeout T, seconds
    duration: float = 60.0  # seconds of data production
    fail_primary_after: float | None = None  # seconds after production starts
    interval: float = 1.0  # seconds between values of one group
    username: str | None = None
    password: str | None = None
    verify_tls: bool = True
    ca_file: str | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def __post_init__(self) -> None:
        if self.groups < 1 or self.adapters_per_group < 1:
            raise ValueError("--groups and --adapters-per-group must be at least 1.")
        for mode in self.modes:
            if mode not in MODES:
                raise ValueError(f"--mode '{mode}' is not one of {', '.join(MODES)}.")
        if not self.endpoints:
            raise ValueError("--endpoint: at least one failover endpoint URL is required.")
        if not self.timeout >= MIN_TIMEOUT:
            raise ValueError(f"--timeout must be at least {MIN_TIMEOUT:g} s (00:00:01).")
        if not self.duration > 0 or not self.interval > 0:
            raise ValueError("--duration and --interval must be positive.")
        if self.fail_primary_after is not None and not (
            0 <= self.fail_primary_after < self.duration
        ):
            raise ValueError("--fail-primary-after must be from 0 to less than --duration.")
