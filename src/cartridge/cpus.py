"""How many cores this process may really use: the affinity mask, capped by a cgroup v2
CPU quota. A Kubernetes pod's CPU limit is a quota, not a mask, so `os.cpu_count()`
and the mask alone report the whole node and oversubscribe the pod."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()
    except (OSError, ValueError):  # no cgroup v2 here, or an unexpected format
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, math.ceil(int(quota) / int(period))))
