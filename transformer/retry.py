"""When the transformer asks a predictor that is not there yet again: a pure policy on plain numbers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """When to ask a predictor that is not there yet again: exponential back-off with equal jitter.

    Equal jitter (half the step fixed, half random; redis-py's EqualJitterBackoff): the random half
    spreads the hundreds of requests a cold start holds, so they do not reconnect in lockstep; the
    fixed half keeps a refused port (which fails at once) from being hammered in a loop.
    """

    base_s: float = 0.05
    cap_s: float = 2.0

    def pause_s(self, failures: int, remaining_s: float, draw: float) -> float:
        """The pause after `failures` failed attempts in a row, `draw` uniform in [0, 1): never past
        the `remaining_s` left of the deadline."""
        step = min(self.cap_s, self.base_s * 2 ** (failures - 1))
        return max(0.0, min(remaining_s, step / 2 + draw * step / 2))
