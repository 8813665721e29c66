"""The retry policy on plain numbers: exponential steps, jitter within each, never past the deadline."""

from __future__ import annotations

import random

import pytest

from transformer.retry import RetryPolicy


def test_steps_double_from_the_base_up_to_the_cap():
    policy = RetryPolicy(base_s=0.05, cap_s=2.0)
    longest = [policy.pause_s(failures, remaining_s=100, draw=1.0) for failures in range(1, 10)]
    assert longest == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0])


def test_half_of_each_step_is_fixed_and_half_random():
    policy = RetryPolicy(base_s=0.05, cap_s=2.0)
    for failures in range(1, 10):
        step = min(2.0, 0.05 * 2 ** (failures - 1))
        assert policy.pause_s(failures, 100, draw=0.0) == pytest.approx(step / 2)
        pauses = [policy.pause_s(failures, 100, random.Random(failures * 100 + i).random()) for i in range(200)]
        assert step / 2 <= min(pauses) and max(pauses) < step
        assert len(set(pauses)) > 150  # requests waiting out the same outage do not retry in lockstep


def test_a_pause_never_runs_past_the_deadline():
    policy = RetryPolicy()
    assert policy.pause_s(8, remaining_s=0.3, draw=0.9) == pytest.approx(0.3)
    assert policy.pause_s(1, remaining_s=-0.5, draw=0.9) == 0.0
