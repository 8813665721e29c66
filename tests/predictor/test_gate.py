"""`--runtime auto`'s policy on plain data: the accuracy gate, the choice, the CPU class."""

from __future__ import annotations

import numpy as np
import pytest

from predictor.gate import (
    MAX_MEAN_ABS_DIFF,
    MIN_AGREEMENT,
    NO_CALIBRATION_SET,
    Candidate,
    Decision,
    candidates,
    compare,
    cpu_class,
    decide,
    missing_bf16,
    runnable_here,
)

FP32 = Candidate("onnx", 1.0, 0.0, 100.0)


def test_compare_counts_top_label_agreement_and_mean_probability_difference():
    reference = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    probs = np.array([[0.8, 0.2], [0.2, 0.8], [0.4, 0.6], [0.3, 0.7]])  # third text flips
    agreement, diff = compare(reference, probs)
    assert agreement == 0.75
    assert diff == pytest.approx((0.1 + 0.1 + 0 + 0 + 0.2 + 0.2) / 8)
    with pytest.raises(ValueError, match="same texts"):
        compare(reference, probs[:3])


@pytest.mark.parametrize(("agreement", "diff", "failures"), [
    (MIN_AGREEMENT, MAX_MEAN_ABS_DIFF, []),  # both limits are inclusive
    (0.9949, 0.001, ["top-label agreement 99.49% < 99.5%"]),
    (0.999, 0.0101, ["mean |dp| 0.0101 > 0.01"]),
    (0.98, 0.02, ["top-label agreement 98.00% < 99.5%", "mean |dp| 0.0200 > 0.01"]),
])
def test_the_gate_needs_both_label_agreement_and_close_probabilities(agreement, diff, failures):
    assert Candidate("onnx-int8", agreement, diff, 300.0).failures() == failures


def test_the_fastest_passing_candidate_wins():
    slow_int8 = Candidate("onnx-int8", 0.999, 0.004, 180.0)
    fast_other = Candidate("onnx-int4", 0.996, 0.008, 250.0)
    decision = decide([FP32, slow_int8, fast_other])
    assert (decision.runtime, decision.reason) == ("onnx-int4", "fastest-passing")
    assert decision.detail == "onnx-int8: passes, 1.80x fp32; onnx-int4: passes, 2.50x fp32"
    assert decision.candidates == (FP32, slow_int8, fast_other)


def test_a_faster_candidate_that_fails_the_gate_leaves_fp32_serving():
    failing = Candidate("onnx-int8", 0.989, 0.014, 200.0)
    decision = decide([FP32, failing])
    assert (decision.runtime, decision.reason) == ("onnx", "gate-failed")
    assert "top-label agreement 98.90% < 99.5%, mean |dp| 0.0140 > 0.01, 2.00x fp32" in decision.detail
    # A failing fast candidate never beats a passing slower one.
    passing = Candidate("onnx-int4", 0.999, 0.002, 150.0)
    assert decide([FP32, failing, passing]).runtime == "onnx-int4"


def test_a_passing_candidate_within_the_speed_noise_leaves_fp32_serving():
    decision = decide([FP32, Candidate("onnx-int8", 1.0, 0.001, 105.0)])
    assert (decision.runtime, decision.reason) == ("onnx", "not-faster")


def test_only_fp32_to_choose_from_and_no_calibration_set_mean_fp32():
    assert (decide([FP32]).runtime, decide([FP32]).reason) == ("onnx", "gate-failed")
    assert (NO_CALIBRATION_SET.runtime, NO_CALIBRATION_SET.reason) == ("onnx", "no-calibration-set")
    with pytest.raises(ValueError, match="reference 'onnx'"):
        decide([Candidate("onnx-int8", 1.0, 0.0, 200.0)])


def test_a_decision_survives_its_json_record():
    decision = decide([FP32, Candidate("onnx-int8", 0.996, 0.006, 216.0)])
    assert Decision.from_json(decision.to_json()) == decision


ZEN3 = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma bmi1 avx2 bmi2 sha_ni vaes vpclmulqdq".split()
ZEN4 = [*ZEN3, "avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni", "avx512vbmi"]
SKYLAKE_X = [*ZEN3, "avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512cd"]
SAPPHIRE_RAPIDS = [*ZEN4, "avx_vnni", "amx_bf16", "amx_tile", "amx_int8", "avx512_fp16"]
ALDER_LAKE = [*ZEN3, "avx_vnni"]
ICE_LAKE = [*SKYLAKE_X, "avx512_vnni"]


@pytest.mark.parametrize(("flags", "expected"), [
    (ZEN3, "avx2"), (ZEN4, "avx512_bf16"), (ICE_LAKE, "avx512_vnni"), (SKYLAKE_X, "avx512"), (SAPPHIRE_RAPIDS, "amx"),
    (ALDER_LAKE, "avx2_vnni"), (["sse2"], "baseline"), ([], "baseline"),
])
def test_cpu_class_names_the_best_int8_and_bf16_instructions(flags, expected):
    assert cpu_class(flags) == expected


@pytest.mark.parametrize(("flags", "native"), [(ZEN3, False), (ALDER_LAKE, False), (SKYLAKE_X, False),
                                               (ICE_LAKE, False), (ZEN4, True), (SAPPHIRE_RAPIDS, True)])
def test_torch_bf16_is_a_candidate_only_with_torch_and_native_bf16(flags, native):
    assert candidates(flags, has_torch=False) == ("onnx", "onnx-int8")  # the torch-free image, on any CPU
    assert candidates(flags, has_torch=True) == ("onnx", "onnx-int8", *(("torch-bf16",) if native else ()))
    assert missing_bf16(flags) == (None if native else "the CPU has neither amx_bf16 nor avx512_bf16")


RECORDED = decide([FP32, Candidate("onnx-int8", 0.996, 0.006, 180.0), Candidate("torch-bf16", 0.999, 0.001, 260.0)])


def test_a_pod_that_can_run_the_recorded_runtime_serves_it():
    assert RECORDED.runtime == "torch-bf16"
    assert runnable_here(RECORDED, ["onnx", "onnx-int8", "torch-bf16"], "") is RECORDED


def test_a_pod_that_cannot_run_the_recorded_runtime_serves_the_fastest_recorded_one_it_can_without_measuring():
    served = runnable_here(RECORDED, ["onnx", "onnx-int8"], "it needs torch")
    assert (served.runtime, served.reason) == ("onnx-int8", "recorded-unavailable")
    assert served.detail == ("recorded torch-bf16 cannot run here (it needs torch); among the recorded candidates "
                             "it can run: onnx-int8: passes, 1.80x fp32")
    assert served.candidates == RECORDED.candidates
    # What remains is judged by the same gate and speed rule: a failing or too slow int8 leaves fp32.
    for int8 in (Candidate("onnx-int8", 0.98, 0.02, 180.0), Candidate("onnx-int8", 1.0, 0.001, 105.0)):
        recorded = decide([FP32, int8, Candidate("torch-bf16", 0.999, 0.001, 260.0)])
        assert runnable_here(recorded, ["onnx", "onnx-int8"], "it needs torch").runtime == "onnx"
