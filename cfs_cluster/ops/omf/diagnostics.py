"""Process diagnostics of this node for the System.Diagnostics stream: /proc and the data disk."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from cfs_cluster.ops.omf.messages import omf_time


def collect_diagnostics(started_at: float, data_dir: Path) -> dict[str, Any]:
    """Process metrics in the units of the commercial sample (sizes in MB, times in seconds)."""
    status = _proc_status()
    times = os.times()
    try:
        disk = shutil.disk_usage(data_dir)
        total, free = disk.total / 1e6, disk.free / 1e6
    except OSError:
        total = free = 0.0
    try:
        handles = len(os.listdir("/proc/self/fd"))
    except OSError:
        handles = 0
    return {
        "ProcessIdentifier": os.getpid(),
        "StartTime": omf_time(started_at),
        "WorkingSet": status.get("VmRSS", 0) / 1e3,
        "TotalProcessorTime": times.user + times.system,
        "TotalUserProcessorTime": times.user,
        "TotalPrivilegedProcessorTime": times.system,
        "ThreadCount": int(status.get("Threads", 0)),
        "HandleCount": handles,
        "ManagedMemorySize": status.get("RssAnon", 0) / 1e3,
        "PrivateMemorySize": status.get("VmData", 0) / 1e3,
        "PeakPagedMemorySize": status.get("VmHWM", 0) / 1e3,
        "StorageTotalSize": total,
        "StorageFreeSpace": free,
    }


def _proc_status() -> dict[str, float]:
    """Numbers of /proc/self/status (kB for sizes); empty where /proc does not exist."""
    values: dict[str, float] = {}
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                first = rest.split()[:1]
                if first and first[0].isdigit():
                    values[key] = float(first[0])
    except OSError:
        pass
    return values
