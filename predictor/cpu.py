"""How many threads the forward passes may use: the container's CPU limit, not the node's cores.

`os.cpu_count()` counts the node's cores (8-64 on a cloud node), so ONNX Runtime and torch would start
that many busy threads in a pod limited to 2 CPUs, and the CFS quota would throttle them all. The limit
is in the cgroup: cgroup v2 `cpu.max` ("max 100000" or "200000 100000": quota and period in µs), or
cgroup v1 `cpu/cpu.cfs_quota_us` and `cpu/cpu.cfs_period_us` (quota -1: none). KServe's own
`kserve.utils.cpu_count` (python/kserve/kserve/utils/utils.py) reads only the v1 `cpu,cpuacct` files
and rounds down, so it sees no limit on cgroup v2 nodes. No KServe imports.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def read_cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (the first `flags` line of /proc/cpuinfo; empty where there is none)."""
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.partition(":")[2].split())
    return set()


@dataclass(frozen=True)
class ThreadBudget:
    """A thread count and where it came from (logged at start-up)."""

    threads: int
    source: str


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs allowed by the cgroup quota under `root` (cgroup v2, then v1), or None when there is no quota."""
    v2 = root / "cpu.max"
    if v2.is_file():
        quota, _, period = v2.read_text().strip().partition(" ")
        return None if quota == "max" else int(quota) / int(period or 100_000)
    for v1 in (root / "cpu", root / "cpu,cpuacct", root):
        quota_file, period_file = v1 / "cpu.cfs_quota_us", v1 / "cpu.cfs_period_us"
        if quota_file.is_file() and period_file.is_file():
            quota = int(quota_file.read_text())
            return None if quota <= 0 else quota / int(period_file.read_text())
    return None


def usable_cpus() -> int:
    """CPUs this process may be scheduled on (the cpuset), which can be fewer than `os.cpu_count()`."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def thread_budget(requested: int | None = None, root: Path = CGROUP_ROOT,
                  cpus: Callable[[], int] = usable_cpus) -> ThreadBudget:
    """`requested` if given (--threads), else the cgroup CPU limit rounded up, capped by the usable CPUs, at least 1."""
    if requested:
        return ThreadBudget(requested, "--threads")
    available = max(1, cpus())
    limit = cgroup_cpu_limit(root)
    if limit is None:
        return ThreadBudget(available, f"no cgroup CPU limit; {available} usable CPUs")
    threads = max(1, min(math.ceil(limit), available))
    return ThreadBudget(threads, f"cgroup CPU limit {limit:g}, {available} usable CPUs")


@dataclass(frozen=True)
class ComputePlan:
    """Forward passes computed at once (batcher workers), threads in each, and where that came from."""

    passes: int
    threads: int
    source: str


def compute_plan(passes: int | None = None, threads: int | None = None, root: Path = CGROUP_ROOT,
                 cpus: Callable[[], int] = usable_cpus) -> ComputePlan:
    """One pass at a time unless --parallel_passes says otherwise; unset --threads share the CPU budget
    (`thread_budget`) between the passes.

    One pass on every thread answers a lone request fastest (DistilBERT on 2 CPUs: 38 req/s at one
    client against 23 for two one-thread passes); two one-thread passes do more under load (89
    against 70 req/s at 32 clients) since they never wait for each other (bench/served.py,
    docs/decisions/parallel-passes.md): a choice by traffic, so a flag.
    """
    for name, value in (("--parallel_passes", passes), ("--threads", threads)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    passes = passes or 1
    if threads:
        return ComputePlan(passes, threads, "--threads")
    budget = thread_budget(None, root, cpus)
    return ComputePlan(passes, max(1, budget.threads // passes), budget.source)
