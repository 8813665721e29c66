"""`--runtime auto` as mechanics: the calibration set, measuring the candidates, the recorded decisions.

The export (`predictor.export`) writes a calibration set into the model directory (CALIBRATION_FILE),
measures the candidates on it and records the decision for its CPU class in
DECISIONS_FILE. A pod whose CPU class has a recorded decision serves it without measuring; one whose
class has none measures once at start-up, on the first STARTUP_TEXTS texts of the shipped set. The
policy (the gate, the choice, the CPU class) is `predictor.gate`.
"""

from __future__ import annotations

import csv
import datetime
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .classifier import DEFAULT_ONNX_CACHE, SentimentClassifier
from .cpu import read_cpu_flags, thread_budget
from .gate import (
    INT8,
    NO_CALIBRATION_SET,
    REFERENCE,
    TORCH_BF16,
    Candidate,
    Decision,
    candidates,
    compare,
    cpu_class,
    decide,
    missing_bf16,
    runnable_here,
)
from .model_dir import CALIBRATION_FILE, DECISIONS_FILE, ONNX_FP32, ONNX_INT8, WEIGHTS_FILES, model_fingerprint
from .runtimes import has_torch

log = logging.getLogger(__name__)

CANDIDATE_FILES = {INT8: (ONNX_INT8,), TORCH_BF16: WEIGHTS_FILES}
"""What a candidate other than fp32 needs in the model directory (any one of these). ONNX Runtime's CPU
provider has no bf16 or fp16 kernels for the transformer's MatMuls on x86 (it casts back to fp32), so the
half-precision candidate is torch's (predictor.gate.candidates says where)."""
SST2_SAMPLE_TEXTS = 1000
SST2_SAMPLE_SEED = 22
STARTUP_TEXTS = 128
"""Texts measured at start-up when the pod's CPU class has no recorded decision, the candidates' models
loaded included (docs/decisions/auto-runtime.md). On 128 texts the gate's 99.5% allows no
disagreement at all: a start-up measurement errs towards fp32."""
PASS_TEXTS, PASS_TOKENS = 32, 512
"""Passes as the batcher fills them under load (--max_batch_size, --max_batch_tokens defaults)."""


@dataclass(frozen=True)
class RuntimeChoice:
    """The runtime a predictor serves, why, and where the decision came from (start-up log, metadata, metric)."""

    decision: Decision
    source: str
    """`flag` (--runtime names it), `export` (recorded for this CPU class), `start-up` (measured now)."""
    cpu_class: str

    @property
    def runtime(self) -> str:
        return self.decision.runtime

    def describe(self) -> str:
        if self.source == "flag":
            return f"runtime {self.runtime} (--runtime)"
        return (f"runtime {self.runtime} (--runtime auto, {self.decision.reason}, decided at {self.source} for CPU "
                f"class {self.cpu_class}: {self.decision.detail})")


def sst2_sample(train_tsv: Path, n: int = SST2_SAMPLE_TEXTS, seed: int = SST2_SAMPLE_SEED) -> list[str]:
    """`n` sentences drawn at random (fixed seed) from SST-2 train: never dev, which measures accuracy."""
    with train_tsv.open() as f:
        sentences = [row["sentence"].strip() for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    return random.Random(seed).sample(sentences, n)


def read_texts(path: Path) -> list[str]:
    """Calibration texts from a file: JSON lines with a `text` field (.jsonl), or one text per line."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return [json.loads(line)["text"] for line in lines] if path.suffix == ".jsonl" else lines


def write_calibration(model_dir: Path, texts: list[str]) -> None:
    if not texts:
        raise ValueError("a calibration set needs at least one text")
    (model_dir / CALIBRATION_FILE).write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))


def shipped_calibration(model_dir: Path) -> list[str] | None:
    path = model_dir / CALIBRATION_FILE
    return read_texts(path) if path.is_file() else None


def passes(classifier: SentimentClassifier, texts: list[str]) -> list[list]:
    """The texts, tokenized, in passes of at most PASS_TEXTS texts and PASS_TOKENS padded tokens, in order."""
    out: list[list] = []
    current: list = []
    longest = 0
    for encoded in classifier.encode(texts):
        width = max(longest, len(encoded.ids))
        if current and (len(current) >= PASS_TEXTS or width * (len(current) + 1) > PASS_TOKENS):
            out.append(current)
            current, width = [], len(encoded.ids)
        current.append(encoded)
        longest = width
    return [*out, current] if current else out


def measure(classifiers: dict[str, SentimentClassifier], texts: list[str]) -> list[Candidate]:
    """Each classifier's agreement with the reference's labels, mean probability difference and speed.

    The candidates take turns pass by pass, so load from other processes falls on all of them alike. Only
    the second round over the passes is timed: torch builds its kernels for each new pass shape on first
    use (torch-bf16 on MiniLM, Sapphire Rapids: 71 texts/s the first time, 118 after), which a serving pod
    pays once per shape.
    """
    batches = passes(classifiers[REFERENCE], texts)
    probs: dict[str, list[np.ndarray]] = {name: [] for name in classifiers}
    seconds = dict.fromkeys(classifiers, 0.0)
    for timed in (False, True):
        for batch in batches:
            for name, c in classifiers.items():
                start = time.perf_counter()
                answer = c.predict_encoded(batch)
                if timed:
                    seconds[name] += time.perf_counter() - start
                    probs[name].append(answer)
    reference = np.concatenate(probs[REFERENCE])
    figures = []
    for name in classifiers:
        agreement, diff = compare(reference, np.concatenate(probs[name]))
        figures.append(Candidate(name, round(agreement, 4), round(diff, 5), round(len(texts) / seconds[name], 1)))
    return figures


def runnable(model_dir: Path, flags: set[str]) -> list[str]:
    """The candidates this CPU and image can run on what `model_dir` ships."""
    return [name for name in candidates(flags, has_torch()) if name == REFERENCE or _ships(model_dir, name)]


def _ships(model_dir: Path, runtime: str) -> bool:
    return any((model_dir / f).is_file() for f in CANDIDATE_FILES[runtime])


def load_candidates(model_dir: Path, threads: int | None, max_length: int | None, onnx_cache_dir: Path,
                    flags: set[str] | None = None) -> dict[str, SentimentClassifier]:
    return {name: SentimentClassifier(model_dir, runtime=name, max_length=max_length, threads=threads,
                                      onnx_cache_dir=onnx_cache_dir)
            for name in runnable(model_dir, read_cpu_flags() if flags is None else flags)}


def read_decisions(model_dir: Path) -> dict:
    path = model_dir / DECISIONS_FILE
    return json.loads(path.read_text()) if path.is_file() else {"fingerprint": None, "decisions": {}}


def candidate_files(model_dir: Path) -> dict[str, int]:
    files = [model_dir / name for name in (ONNX_FP32, ONNX_INT8)]
    return {f.name: f.stat().st_size for f in files if f.is_file()}


def record_decision(model_dir: Path, fingerprint: str, cpu_key: str, decision: Decision, texts: int,
                    threads: int) -> None:
    """Add `decision` for `cpu_key` to DECISIONS_FILE, with what it was measured on (`fingerprint`: the model's)."""
    record = read_decisions(model_dir)
    if record.get("fingerprint") != fingerprint:
        record = {"fingerprint": fingerprint, "decisions": {}}
    record["decisions"][cpu_key] = {
        **decision.to_json(), "texts": texts, "threads": threads, "cpu": _cpu_model(),
        "measured": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "files": candidate_files(model_dir)}
    (model_dir / DECISIONS_FILE).write_text(json.dumps(record, indent=1) + "\n")


def _cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return "unknown"


def recorded_decision(model_dir: Path, cpu_key: str) -> Decision | None:
    """The decision recorded for `cpu_key`, if it was measured on this model and on these very files.

    The ONNX files are checked by size, as the export manifest checks its large files (`model_fingerprint`
    re-hashes the small ones, this file included, against the manifest).
    """
    record = read_decisions(model_dir)
    entry = record["decisions"].get(cpu_key)
    if entry is None:
        return None
    if record["fingerprint"] != model_fingerprint(model_dir) or entry["files"] != candidate_files(model_dir):
        log.warning("%s: the decision for CPU class %s was measured on other model files; measuring again",
                    model_dir / DECISIONS_FILE, cpu_key)
        return None
    return Decision.from_json(entry)


def calibrate(model_dir: Path, texts: list[str], threads: int | None = None, max_length: int | None = None,
              onnx_cache_dir: Path | None = None, flags: set[str] | None = None,
              ) -> tuple[Decision, dict[str, SentimentClassifier]]:
    """Measure every candidate in `model_dir` on `texts` and decide (the classifiers are returned for reuse)."""
    classifiers = load_candidates(model_dir, threads, max_length, onnx_cache_dir or DEFAULT_ONNX_CACHE, flags)
    return decide(measure(classifiers, texts)), classifiers


def record_for_this_cpu(model_dir: Path, fingerprint: str, texts: list[str]) -> Decision:
    """What the export does: calibrate on all `texts` and record the decision for this CPU's class.

    `fingerprint` is the source model's (an export directory gets its manifest only afterwards)."""
    threads = thread_budget(None).threads
    decision, _ = calibrate(model_dir, texts, threads)
    record_decision(model_dir, fingerprint, cpu_class(read_cpu_flags()), decision, len(texts), threads)
    return decision


def unavailable(model_dir: Path, flags: set[str], runtime: str) -> str:
    """What this pod lacks to run `runtime` (for the log; empty where it lacks nothing)."""
    if runtime == TORCH_BF16 and not has_torch():
        return "it needs torch, which this image does not have"
    if runtime == TORCH_BF16 and (why := missing_bf16(flags)):
        return why
    if runtime in CANDIDATE_FILES and not _ships(model_dir, runtime):
        return f"{model_dir} ships none of {', '.join(CANDIDATE_FILES[runtime])}"
    return ""


def auto_classifier(model_dir: Path, threads: int | None, max_length: int | None, onnx_cache_dir: Path,
                    flags: set[str] | None = None) -> tuple[SentimentClassifier, RuntimeChoice]:
    """The classifier `--runtime auto` serves: the recorded decision for this CPU class, or one measured now."""
    flags = read_cpu_flags() if flags is None else flags
    cpu_key = cpu_class(flags)
    texts = shipped_calibration(model_dir)
    if texts is None:
        choice, classifiers = RuntimeChoice(NO_CALIBRATION_SET, "start-up", cpu_key), {}
    elif (decision := recorded_decision(model_dir, cpu_key)) is not None:
        here = runnable(model_dir, flags)
        missing = unavailable(model_dir, flags, decision.runtime)
        choice, classifiers = RuntimeChoice(runnable_here(decision, here, missing), "export", cpu_key), {}
    else:
        start = time.monotonic()
        decision, classifiers = calibrate(model_dir, texts[:STARTUP_TEXTS], threads, max_length, onnx_cache_dir,
                                          flags)
        choice = RuntimeChoice(decision, "start-up", cpu_key)
        log.info("no decision recorded for CPU class %s in %s: measured %d of its calibration texts in %.1fs",
                 cpu_key, model_dir, min(len(texts), STARTUP_TEXTS), time.monotonic() - start)
    classifier = classifiers.get(choice.runtime) or SentimentClassifier(
        model_dir, runtime=choice.runtime, max_length=max_length, threads=threads, onnx_cache_dir=onnx_cache_dir)
    return classifier, choice
