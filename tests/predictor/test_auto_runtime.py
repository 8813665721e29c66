"""`--runtime auto` on real models: the calibration set and decision an export ships, a model whose int8
weights are corrupt staying on fp32, and real predictor processes reporting what they serve and why.

The shared MiniLM's decision is not hard-coded: int8 kernels differ by CPU class (AVX2-only Zen 3 against
AVX-512 VNNI or AMX Xeons), so the tests assert that the decision is the one its measured figures imply,
and that the figures reproduce when measured again on this machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import httpx
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from harness.processes import REPO, PredictorProcess
from harness.tiny_model import build_tiny_model
from predictor.calibration import (
    PASS_TEXTS,
    PASS_TOKENS,
    STARTUP_TEXTS,
    auto_classifier,
    calibrate,
    measure,
    passes,
    read_cpu_flags,
    recorded_decision,
    shipped_calibration,
)
from predictor.classifier import SentimentClassifier
from predictor.export import export
from predictor.gate import Candidate, Decision, cpu_class, decide, missing_bf16
from predictor.model_dir import (
    CALIBRATION_FILE,
    CONFIG_FILE,
    DECISIONS_FILE,
    EXPORT_MANIFEST,
    ONNX_FP32,
    ONNX_INT8,
    TOKENIZER_FILES,
    fingerprint,
    model_fingerprint,
    write_manifest,
)

TEXTS = ["the movie was great fun", "terrible boring plot", "i love this film", "a dull and lifeless mess"]
THIS_CPU = cpu_class(read_cpu_flags())
NO_BF16 = missing_bf16(read_cpu_flags())


@pytest.fixture(scope="module")
def recorded(exported_model):
    record = json.loads((exported_model / DECISIONS_FILE).read_text())
    return record, record["decisions"][THIS_CPU]


def test_the_export_ships_1000_sst2_train_sentences_covered_by_its_manifest(exported_model, shared_dir):
    texts = shipped_calibration(exported_model)
    assert len(texts) == len(set(texts)) == 1000
    with (shared_dir / "data" / "sst2" / "train.tsv").open() as f:
        train = {line.split("\t")[0].strip() for line in f}
    with (shared_dir / "data" / "sst2" / "dev.tsv").open() as f:
        dev = {line.split("\t")[0].strip() for line in f}
    assert set(texts) <= train and not set(texts) & dev
    manifest = json.loads((exported_model / EXPORT_MANIFEST).read_text())["files"]
    assert {CALIBRATION_FILE, DECISIONS_FILE} <= manifest.keys()


def test_the_shared_model_is_judged_as_its_figures_imply(exported_model, recorded):
    record, entry = recorded
    assert record["fingerprint"] == model_fingerprint(exported_model)
    assert entry["texts"] == 1000
    figures = [Candidate(**c) for c in entry["candidates"]]
    assert [c.runtime for c in figures] == ["onnx", "onnx-int8"]
    implied = decide(figures)
    assert (entry["runtime"], entry["reason"], entry["detail"]) == (implied.runtime, implied.reason, implied.detail)
    # Measured again here, on the same calibration set in the same passes, the accuracy figures come
    # back (speeds move with the machine's load, accuracy does not).
    classifiers = {name: SentimentClassifier(exported_model, runtime=name) for name in ("onnx", "onnx-int8")}
    again = {c.runtime: c for c in measure(classifiers, shipped_calibration(exported_model))}
    for before in figures:
        assert again[before.runtime].agreement == pytest.approx(before.agreement, abs=0.002)
        assert again[before.runtime].mean_abs_diff == pytest.approx(before.mean_abs_diff, abs=0.001)
        assert bool(again[before.runtime].failures()) == bool(before.failures())


def corrupt_int8(model_dir, factor: float = 40.0) -> str:
    """Scale one weight matrix's per-channel quantization scales by `factor` (the file keeps its size)."""
    path = model_dir / ONNX_INT8
    model = onnx.load(str(path))
    scales = [t for t in model.graph.initializer if t.name.endswith("_scale") and numpy_helper.to_array(t).size > 1]
    target = scales[len(scales) // 2]
    target.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(target) * np.float32(factor), target.name))
    size = path.stat().st_size
    onnx.save(model, str(path))
    assert path.stat().st_size == size
    return target.name


@pytest.fixture(scope="module")
def corrupted(exported_model, tmp_path_factory):
    """The shared export with one int8 weight scaled 40x and no recorded decision, manifest and all: what a pod
    sees on a CPU class the export did not measure."""
    copy = shutil.copytree(exported_model, tmp_path_factory.mktemp("corrupt") / "model")
    corrupt_int8(copy)
    (copy / DECISIONS_FILE).unlink()
    write_manifest(copy, model_fingerprint(exported_model))
    assert model_fingerprint(copy) == model_fingerprint(exported_model)
    return copy


def test_corrupt_int8_weights_fail_the_gate(corrupted):
    decision, classifiers = calibrate(corrupted, shipped_calibration(corrupted)[:STARTUP_TEXTS])
    int8 = next(c for c in decision.candidates if c.runtime == "onnx-int8")
    assert (decision.runtime, decision.reason) == ("onnx", "gate-failed")
    assert int8.failures(), int8
    assert set(classifiers) == {"onnx", "onnx-int8"}


def metric_line(url: str) -> str:
    lines = [line for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines()
             if line.startswith("sentiment_predictor_runtime_info{")]
    assert len(lines) == 1, lines
    return lines[0]


def served(proc: PredictorProcess, model_dir, runtime: str, source: str, reason: str) -> None:
    """What the predictor reports (log, v2 metadata, metric) and answers, against `runtime` in this process."""
    metadata = httpx.get(f"{proc.url}/v2/models/sentiment", timeout=10).json()
    version = f"{model_fingerprint(model_dir)}-{runtime}"
    assert metadata["versions"] == [version]
    assert metadata["platform"] == (f"{runtime} (--runtime auto: {reason}, decided at {source} for CPU class "
                                    f"{THIS_CPU})")
    assert re.search(rf"version={version} runtime {runtime} \(--runtime auto, {reason}, decided at {source} for "
                     rf"CPU class {THIS_CPU}: .*onnx-int8: ", proc.log()), proc.log()[-3000:]
    assert metric_line(proc.url) == (f'sentiment_predictor_runtime_info{{cpu_class="{THIS_CPU}",reason="{reason}",'
                                     f'runtime="{runtime}",source="{source}"}} 1.0')
    answer = httpx.post(f"{proc.url}/v1/models/sentiment:predict", json={"instances": TEXTS}, timeout=30).json()
    assert answer["model_version"] == version
    reference = SentimentClassifier(model_dir, runtime=runtime)
    scores = [{r["label"]: r["score"] for r in row} for row in answer["predictions"]]
    # One pass of these texts, as the lone request's (dynamic int8 scales activations per pass).
    np.testing.assert_allclose([[row[label] for label in reference.labels] for row in scores],
                               reference.predict(TEXTS), atol=1e-5)


def test_a_predictor_on_corrupt_int8_weights_measures_at_start_up_and_serves_fp32(corrupted):
    proc = PredictorProcess(corrupted, extra=["--runtime", "auto"]).start()
    try:
        served(proc, corrupted, "onnx", "start-up", "gate-failed")
        assert "top-label agreement" in proc.log() or "mean |dp|" in proc.log()
    finally:
        proc.stop()


def test_a_predictor_serves_the_decision_the_export_recorded_for_its_cpu_class(exported_model, recorded):
    _, entry = recorded
    proc = PredictorProcess(exported_model, extra=["--runtime", "auto"]).start()
    try:
        served(proc, exported_model, entry["runtime"], "export", entry["reason"])
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


def test_without_a_calibration_set_auto_serves_fp32(tiny, tmp_path):
    out = tmp_path / "export"
    export(tiny, out)
    classifier, choice = auto_classifier(out, 1, None, tmp_path / "cache")
    assert (choice.runtime, choice.decision.reason) == ("onnx", "no-calibration-set")
    assert classifier.version == f"{fingerprint(tiny)}-onnx"


def test_a_recorded_decision_holds_for_its_cpu_class_and_these_files_only(tiny, tmp_path):
    out = tmp_path / "export"
    export(tiny, out, calibration=TEXTS * 8)
    recorded_here = recorded_decision(out, THIS_CPU)
    assert isinstance(recorded_here, Decision) and len(recorded_here.candidates) == 2
    classifier, choice = auto_classifier(out, 1, None, tmp_path / "cache")
    assert (choice.source, choice.runtime) == ("export", recorded_here.runtime)
    assert classifier.version == f"{fingerprint(tiny)}-{recorded_here.runtime}"
    # Another CPU class has no decision: measured at start-up.
    _, elsewhere = auto_classifier(out, 1, None, tmp_path / "cache", flags={"sse2"})
    assert (elsewhere.source, elsewhere.cpu_class) == ("start-up", "baseline")
    # An int8 file replaced after the export (another size) invalidates the decision.
    shutil.copyfile(out / "model.onnx", out / ONNX_INT8)
    assert recorded_decision(out, THIS_CPU) is None


def test_calibration_passes_are_the_batcher_s_sizes(tiny):
    classifier = SentimentClassifier(tiny, runtime="onnx")
    texts = [" ".join(["movie"] * n) for n in (1, 2, 60, 3, 10, *[4] * 40)]
    batches = passes(classifier, texts)
    assert [e for batch in batches for e in batch] == classifier.encode(texts)  # all texts, in order
    for batch in batches:
        assert len(batch) <= PASS_TEXTS and len(batch) * max(len(e.ids) for e in batch) <= PASS_TOKENS
    assert [len(b) for b in batches] == [8, 32, 5]  # 9 x 62 tokens > 512; then 32 texts at most


def test_the_export_takes_its_calibration_texts_from_a_file_or_none(tiny, tmp_path):
    from predictor.export import main

    (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n\n")
    main([str(tiny), "--out", str(tmp_path / "given"), "--calibration", str(tmp_path / "texts.txt")])
    assert shipped_calibration(tmp_path / "given") == TEXTS
    assert recorded_decision(tmp_path / "given", THIS_CPU) is not None
    main([str(tiny), "--out", str(tmp_path / "none"), "--no-calibration"])
    assert not (tmp_path / "none" / CALIBRATION_FILE).exists() and not (tmp_path / "none" / DECISIONS_FILE).exists()


@pytest.fixture(scope="module")
def torch_free(tmp_path_factory) -> dict[str, str]:
    """The environment of the torch-free image, in this one: torch and transformers cannot be imported."""
    blocker = tmp_path_factory.mktemp("torch-free")
    (blocker / "sitecustomize.py").write_text('import sys\nsys.modules["torch"] = sys.modules["transformers"] = None\n')
    return {"PYTHONPATH": f"{blocker}:{REPO}"}


def test_the_torch_free_image_refuses_torch_bf16_naming_what_it_lacks(tiny, torch_free):
    result = subprocess.run([sys.executable, "-c", "from predictor.classifier import SentimentClassifier\n"
                             f"SentimentClassifier({str(tiny)!r}, runtime='torch-bf16')"],
                            cwd=REPO, env={**os.environ, **torch_free}, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    assert "the torch runtimes needs torch, transformers, which this image does not have" in result.stderr


@pytest.mark.skipif(NO_BF16 is None, reason="this CPU has native bf16: torch-bf16 is not refused here")
def test_torch_bf16_is_refused_on_a_cpu_without_native_bf16(tiny):
    with pytest.raises(RuntimeError, match="--runtime torch-bf16 needs native bf16 matmuls and the CPU has neither"):
        SentimentClassifier(tiny, runtime="torch-bf16")


@pytest.fixture(scope="module")
def exported_in_place(tiny, tmp_path_factory):
    """The tiny model exported next to its weights (`python -m predictor.export MODEL_DIR`): a directory both
    images can serve, torch-bf16 included where the torch image runs on a bf16 CPU."""
    model = shutil.copytree(tiny, tmp_path_factory.mktemp("in-place") / "model")
    export(model, calibration=TEXTS * 8)
    return model


def test_a_torch_free_pod_serves_the_fastest_recorded_candidate_it_can_run(exported_in_place, torch_free):
    # As the torch image on a bf16 CPU records it; figures of the shape measured (docs/decisions/auto-runtime.md).
    figures = [Candidate("onnx", 1.0, 0.0, 100.0), Candidate("onnx-int8", 1.0, 0.004, 180.0),
               Candidate("torch-bf16", 1.0, 0.002, 260.0)]
    path = exported_in_place / DECISIONS_FILE
    record = json.loads(path.read_text())
    record["decisions"][THIS_CPU].update(decide(figures).to_json())
    path.write_text(json.dumps(record))
    assert recorded_decision(exported_in_place, THIS_CPU).runtime == "torch-bf16"
    proc = PredictorProcess(exported_in_place, extra=["--runtime", "auto"],
                            env={**torch_free, "PYTHONPROFILEIMPORTTIME": "1"}).start()
    try:
        served(proc, exported_in_place, "onnx-int8", "export", "recorded-unavailable")
        assert ("recorded torch-bf16 cannot run here (it needs torch, which this image does not have); among the "
                "recorded candidates it can run: onnx-int8: passes, 1.80x fp32") in proc.log()
        assert not re.search(r"^import time: .*\| (torch|transformers)$", proc.log(), re.M)
    finally:
        proc.stop()


@pytest.mark.skipif(NO_BF16 is not None, reason=f"torch-bf16 is no candidate on this CPU: {NO_BF16}")
def test_on_a_bf16_cpu_auto_measures_torch_bf16_against_fp32_onnx_and_says_what_it_chose(model_dir, exported_model,
                                                                                         tmp_path):
    """The shared model with its weights and the export's ONNX files and calibration set, no recorded decision:
    the torch environment on a bf16 CPU measures all three candidates at start-up."""
    model = tmp_path / "model"
    model.mkdir()
    for name in (CONFIG_FILE, *TOKENIZER_FILES, "model.safetensors"):
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, model / name)
    for name in (ONNX_FP32, ONNX_INT8, CALIBRATION_FILE):
        shutil.copyfile(exported_model / name, model / name)
    proc = PredictorProcess(model, extra=["--runtime", "auto"]).start()
    try:
        metadata = httpx.get(f"{proc.url}/v2/models/sentiment", timeout=10).json()
        runtime, reason = re.fullmatch(rf"(\S+) \(--runtime auto: (\S+), decided at start-up for CPU class "
                                       rf"{THIS_CPU}\)", metadata["platform"]).groups()
        assert metadata["versions"] == [f"{model_fingerprint(model)}-{runtime}"]
        judged = re.search(rf"runtime {runtime} \(--runtime auto, {reason}, decided at start-up for CPU class "
                           rf"{THIS_CPU}: onnx-int8: (.*), [0-9.]+x fp32; torch-bf16: (.*), ([0-9.]+)x fp32\)",
                           proc.log())
        assert judged, proc.log()[-3000:]
        assert metric_line(proc.url) == (f'sentiment_predictor_runtime_info{{cpu_class="{THIS_CPU}",reason="{reason}",'
                                         f'runtime="{runtime}",source="start-up"}} 1.0')
        if runtime == "torch-bf16":
            assert (reason, judged[2]) == ("fastest-passing", "passes")
        answer = httpx.post(f"{proc.url}/v1/models/sentiment:predict", json={"instances": TEXTS}, timeout=30).json()
    finally:
        proc.stop()
    # Whatever it serves is inside the gate's distance from fp32 (bf16 and int8 differ from it by ~0.001-0.006).
    fp32 = SentimentClassifier(model, runtime="onnx").predict(TEXTS)
    scores = [{r["label"]: r["score"] for r in row} for row in answer["predictions"]]
    np.testing.assert_allclose([[row[label] for label in ("NEGATIVE", "POSITIVE")] for row in scores], fp32, atol=0.05)
