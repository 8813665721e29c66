"""`--runtime auto` as policy: the accuracy gate, the choice among the candidates, the CPU class.

Pure functions of plain data (probabilities, measured figures, CPU flags); measuring the candidates
and recording the decision is `predictor.calibration`'s job.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

REFERENCE = "onnx"
"""fp32 ONNX: what every candidate is compared with, and what `auto` serves when no other candidate qualifies."""
MIN_AGREEMENT = 0.995
"""A candidate's top label must equal fp32's on at least this share of the calibration texts..."""
MAX_MEAN_ABS_DIFF = 0.01
"""...and its probabilities may differ from fp32's by at most this much on average."""
MIN_SPEEDUP = 1.1
"""A candidate that passes the gate replaces fp32 only when it is at least this much faster: speeds measured on a
shared machine move by several percent, and a gain inside that noise is not worth any loss of fidelity."""

INT8 = "onnx-int8"
TORCH_BF16 = "torch-bf16"
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
"""Either gives oneDNN native bf16 matmuls. Without them torch emulates bf16 through fp32 and runs slower than
fp32 (7x slower on an AVX2-only Zen 3, issue 22), so torch-bf16 is no candidate there and is refused."""

# From the most capable down: the first class whose flags the CPU has is its class. int8 and bf16 kernels
# differ between these (VNNI and AMX instructions, native bf16 or none, saturation on AVX2-only CPUs), so
# one decision holds for all CPUs of a class.
CPU_CLASSES: tuple[tuple[str, frozenset[str]], ...] = (
    ("amx", frozenset({"amx_int8", "amx_bf16", "amx_tile"})),
    ("avx512_bf16", frozenset({"avx512f", "avx512_vnni", "avx512_bf16"})),
    ("avx512_vnni", frozenset({"avx512f", "avx512_vnni"})),
    ("avx512", frozenset({"avx512f"})),
    ("avx2_vnni", frozenset({"avx2", "avx_vnni"})),
    ("avx2", frozenset({"avx2", "fma"})),
)
BASELINE_CLASS = "baseline"


def cpu_class(flags: Iterable[str]) -> str:
    """The CPU feature class of a CPU with these /proc/cpuinfo `flags` (a small, stable key)."""
    flags = set(flags)
    return next((name for name, needed in CPU_CLASSES if needed <= flags), BASELINE_CLASS)


def missing_bf16(flags: Iterable[str]) -> str | None:
    """Why a CPU with these flags cannot run torch-bf16 natively (None: it can)."""
    return None if BF16_FLAGS & set(flags) else f"the CPU has neither {' nor '.join(sorted(BF16_FLAGS))}"


def candidates(flags: Iterable[str], has_torch: bool) -> tuple[str, ...]:
    """The runtimes `auto` measures on a CPU with these flags, in an image with or without torch: torch-bf16 only
    where it can win (torch importable and native bf16), never in the torch-free image."""
    return (REFERENCE, INT8, *((TORCH_BF16,) if has_torch and missing_bf16(flags) is None else ()))


@dataclass(frozen=True)
class Candidate:
    """One runtime's figures on the calibration set, measured against fp32 in the same process."""

    runtime: str
    agreement: float
    """Share of calibration texts whose top label equals fp32's."""
    mean_abs_diff: float
    """Mean absolute difference of its probabilities from fp32's."""
    texts_per_s: float
    """Calibration texts per second, in passes of realistic size, on the same threads as fp32."""

    def failures(self) -> list[str]:
        """Why this candidate may not serve (empty: it passes the gate)."""
        return ([f"top-label agreement {self.agreement:.2%} < {MIN_AGREEMENT:.1%}"] if self.agreement < MIN_AGREEMENT
                else []) + ([f"mean |dp| {self.mean_abs_diff:.4f} > {MAX_MEAN_ABS_DIFF}"]
                            if self.mean_abs_diff > MAX_MEAN_ABS_DIFF else [])


def compare(reference: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """(top-label agreement, mean absolute probability difference) of `probs` against `reference` ([texts, labels])."""
    if reference.shape != probs.shape or not len(reference):
        raise ValueError(f"need probabilities of the same texts, got shapes {reference.shape} and {probs.shape}")
    return (float((reference.argmax(axis=1) == probs.argmax(axis=1)).mean()),
            float(np.abs(reference - probs).mean()))


@dataclass(frozen=True)
class Decision:
    """The runtime `auto` serves, a short reason code (a metric label) and the sentence the log gives."""

    runtime: str
    reason: str
    """`fastest-passing` (a candidate passed the gate and is faster), `gate-failed` (none passed), `not-faster`
    (one passed but is not MIN_SPEEDUP faster than fp32), `no-calibration-set` (nothing to judge with),
    `recorded-unavailable` (the recorded runtime cannot run in this pod: see `runnable_here`)."""
    detail: str
    candidates: tuple[Candidate, ...] = ()

    def to_json(self) -> dict:
        return {"runtime": self.runtime, "reason": self.reason, "detail": self.detail,
                "candidates": [asdict(c) for c in self.candidates]}

    @classmethod
    def from_json(cls, data: dict) -> Decision:
        return cls(data["runtime"], data["reason"], data["detail"],
                   tuple(Candidate(**c) for c in data.get("candidates", ())))


NO_CALIBRATION_SET = Decision(REFERENCE, "no-calibration-set", "the model directory ships no calibration set")


def decide(candidates: Sequence[Candidate]) -> Decision:
    """The fastest candidate that passes the gate and beats fp32 by MIN_SPEEDUP; fp32 otherwise.

    `candidates` holds fp32 itself (REFERENCE, for its speed) and the others measured against it.
    """
    by_runtime = {c.runtime: c for c in candidates}
    if REFERENCE not in by_runtime:
        raise ValueError(f"the candidates must include the reference {REFERENCE!r} (its speed), got {list(by_runtime)}")
    fp32 = by_runtime[REFERENCE]
    others = [c for c in candidates if c.runtime != REFERENCE]
    failed = {c.runtime: c.failures() for c in others if c.failures()}
    passing = sorted((c for c in others if c.runtime not in failed), key=lambda c: c.texts_per_s, reverse=True)
    judged = "; ".join(f"{c.runtime}: {', '.join(failed[c.runtime]) if c.runtime in failed else 'passes'}, "
                       f"{c.texts_per_s / fp32.texts_per_s:.2f}x fp32" for c in others)
    if passing and passing[0].texts_per_s >= MIN_SPEEDUP * fp32.texts_per_s:
        return Decision(passing[0].runtime, "fastest-passing", judged, tuple(candidates))
    return Decision(REFERENCE, "not-faster" if passing else "gate-failed", judged or "no other candidate",
                    tuple(candidates))


def runnable_here(recorded: Decision, runnable: Iterable[str], why: str) -> Decision:
    """`recorded` if this pod can run its runtime, else the choice among the recorded candidates it can run.

    The export may run where the pod does not (the torch image records torch-bf16, the torch-free image serves
    the directory), so the pod decides again on the recorded figures, without measuring; `why` says what it lacks.
    """
    runnable = set(runnable)
    if recorded.runtime in runnable:
        return recorded
    among = decide([c for c in recorded.candidates if c.runtime in runnable])
    return Decision(among.runtime, "recorded-unavailable", f"recorded {recorded.runtime} cannot run here ({why}); "
                    f"among the recorded candidates it can run: {among.detail}", recorded.candidates)
