"""The forward pass's default thread count follows the CPU limit of the pod, not the node's core count."""

from __future__ import annotations

import os

from predictor.runtimes import cpu_budget


def affinity() -> int:
    return len(os.sched_getaffinity(0))


def test_cgroup_v2_quota_caps_the_threads(tmp_path):
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU: one thread
    assert cpu_budget(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs: two threads, unless fewer cores
    assert cpu_budget(tmp_path) == min(2, affinity())


def test_no_quota_means_every_core_this_process_may_use(tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_budget(tmp_path) == affinity()
    assert cpu_budget(tmp_path / "absent") == affinity()


def test_cgroup_v1_quota(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_budget(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # unlimited
    assert cpu_budget(tmp_path) == affinity()
