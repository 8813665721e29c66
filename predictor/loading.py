"""Loading the model: the compute plan, the classifier and its warm-up, with no KServe imports.

`python -m predictor` starts this on a thread before it imports KServe: importing KServe takes about
a second of every cold start, and ONNX Runtime reads and optimizes the model meanwhile without the
GIL, so the two overlap (bench/cold_start.py).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .calibration import RuntimeChoice, auto_classifier, read_cpu_flags
from .classifier import SentimentClassifier
from .cpu import ComputePlan, compute_plan
from .gate import Decision, cpu_class
from .model_dir import CONFIG_FILE
from .runtimes import AUTO
from .settings import PredictorSettings

log = logging.getLogger(__name__)
WARM_UP_TEXT = "warm-up sentence for the first forward pass"


@dataclass(frozen=True)
class LoadedModel:
    classifier: SentimentClassifier
    plan: ComputePlan
    runtime: RuntimeChoice


def wait_for_model(model_dir: Path, timeout_s: float, poll_s: float = 0.05) -> None:
    """Wait until `model_dir` holds a config (a modelcar's link appears), or fail naming what is missing."""
    deadline = time.monotonic() + timeout_s
    logged = False
    while not (model_dir / CONFIG_FILE).is_file():
        if time.monotonic() >= deadline:
            raise SystemExit(f"MODEL_INIT_MODE=async: no {CONFIG_FILE} in {model_dir} after {timeout_s:g}s "
                             "(--model_wait_s); is the modelcar container running?")
        if not logged:
            log.info("waiting up to %gs for the model at %s (MODEL_INIT_MODE=async)", timeout_s, model_dir)
            logged = True
        time.sleep(poll_s)


def load_model(s: PredictorSettings) -> LoadedModel:
    if s.model_init_mode == "async":
        wait_for_model(Path(s.model_dir), s.model_wait_s)
    plan = compute_plan(s.parallel_passes, s.threads)
    if s.runtime == AUTO:
        classifier, choice = auto_classifier(Path(s.model_dir), plan.threads, s.max_length, Path(s.onnx_cache_dir))
    else:
        classifier = SentimentClassifier(s.model_dir, runtime=s.runtime, max_length=s.max_length,
                                         threads=plan.threads, onnx_cache_dir=s.onnx_cache_dir)
        choice = RuntimeChoice(Decision(s.runtime, "requested", "--runtime"), "flag", cpu_class(read_cpu_flags()))
    # ONNX Runtime's first pass costs what later ones do (measured: 6 vs 5 ms for one MiniLM text, 67 vs
    # 62 ms for 32), so one short text proves the model runs. torch builds its kernels for each new
    # shape on first use, so it is warmed at the largest batch.
    classifier.predict([WARM_UP_TEXT] * (s.max_batch_size if classifier.runtime.startswith("torch") else 1))
    return LoadedModel(classifier, plan, choice)


def load_in_background(s: PredictorSettings) -> Future[LoadedModel]:
    pool = ThreadPoolExecutor(1, thread_name_prefix="model-load")
    future = pool.submit(load_model, s)
    pool.shutdown(wait=False)
    return future
