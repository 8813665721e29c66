"""The forward pass's default thread count follows the container's CPU limit (fake cgroup files)."""

from __future__ import annotations

import pytest

from predictor.cpu import ComputePlan, ThreadBudget, cgroup_cpu_limit, compute_plan, thread_budget


def _v2(root, cpu_max: str):
    root.mkdir(parents=True, exist_ok=True)
    (root / "cpu.max").write_text(cpu_max + "\n")
    return root


def _v1(root, quota: int, period: int = 100_000, controller: str = "cpu"):
    d = root / controller
    d.mkdir(parents=True)
    (d / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (d / "cpu.cfs_period_us").write_text(f"{period}\n")
    return root


@pytest.mark.parametrize(("cpu_max", "limit"), [
    ("200000 100000", 2.0), ("150000 100000", 1.5), ("50000 100000", 0.5), ("max 100000", None), ("400000", 4.0),
])
def test_cgroup_v2_quota(tmp_path, cpu_max, limit):
    assert cgroup_cpu_limit(_v2(tmp_path, cpu_max)) == limit


@pytest.mark.parametrize(("quota", "period", "controller", "limit"), [
    (200_000, 100_000, "cpu", 2.0), (50_000, 50_000, "cpu,cpuacct", 1.0), (-1, 100_000, "cpu", None),
])
def test_cgroup_v1_quota(tmp_path, quota, period, controller, limit):
    assert cgroup_cpu_limit(_v1(tmp_path, quota, period, controller)) == limit


def test_no_cgroup_files_means_no_limit(tmp_path):
    assert cgroup_cpu_limit(tmp_path) is None


@pytest.mark.parametrize(("cpu_max", "cpus", "threads"), [
    ("200000 100000", 64, 2),   # a 2-CPU pod on a 64-core node: 2, not 64
    ("150000 100000", 64, 2),   # a fractional limit rounds up
    ("50000 100000", 64, 1),    # at least one thread
    ("800000 100000", 4, 4),    # never more than the CPUs we may run on
    ("max 100000", 6, 6),       # no limit: the usable CPUs
])
def test_thread_budget_from_the_quota(tmp_path, cpu_max, cpus, threads):
    budget = thread_budget(root=_v2(tmp_path, cpu_max), cpus=lambda: cpus)
    assert budget.threads == threads
    assert budget.source.startswith("no cgroup CPU limit") == (cpu_max == "max 100000")


def test_v1_quota_and_missing_files(tmp_path):
    assert thread_budget(root=_v1(tmp_path / "v1", 300_000), cpus=lambda: 16).threads == 3
    none = thread_budget(root=tmp_path / "none", cpus=lambda: 5)
    assert none == ThreadBudget(5, "no cgroup CPU limit; 5 usable CPUs")


def test_threads_flag_overrides_the_quota(tmp_path):
    assert thread_budget(3, root=_v2(tmp_path, "100000 100000"), cpus=lambda: 64) == ThreadBudget(3, "--threads")


@pytest.mark.parametrize(("passes", "threads", "plan"), [
    (None, None, (1, 4)),   # one pass on every CPU of the limit
    (None, 2, (1, 2)),      # --threads as given
    (2, None, (2, 2)),      # --parallel_passes: the limit shared between them
    (8, None, (8, 1)),      # at least one thread each
    (3, 3, (3, 3)),         # both given: as given, whatever the limit
])
def test_compute_plan_fills_the_cpu_limit(tmp_path, passes, threads, plan):
    result = compute_plan(passes, threads, root=_v2(tmp_path, "400000 100000"), cpus=lambda: 64)
    assert (result.passes, result.threads) == plan
    assert isinstance(result, ComputePlan) and result.source


@pytest.mark.parametrize(("passes", "threads"), [(0, None), (None, 0), (-1, 2)])
def test_compute_plan_refuses_less_than_one(tmp_path, passes, threads):
    with pytest.raises(ValueError, match="must be at least 1"):
        compute_plan(passes, threads, root=_v2(tmp_path, "400000 100000"), cpus=lambda: 64)
