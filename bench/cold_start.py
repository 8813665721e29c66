"""Predictor cold start: process start -> /v2/models/sentiment/ready (load + warm-up), per model
and runtime. ONNX runtimes are measured as a new pod sees them: an empty export cache (the export
runs at start-up), and with the export already cached or shipped as model.onnx.

    python -m bench.cold_start [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import psutil

from bench.common import MINILM_DIR, distilbert_dir, table, write_result
from harness.processes import PredictorProcess, http_ready


def measure(model_dir, runtime: str, cache_dir: str) -> tuple[float, float]:
    proc = PredictorProcess(model_dir, extra=["--runtime", runtime, "--onnx_cache_dir", cache_dir])
    start = time.monotonic()
    proc.start(wait=False)
    try:
        proc.wait_ready(http_ready(f"{proc.url}/v2/models/sentiment/ready"), timeout=300)
        elapsed = time.monotonic() - start
        rss = psutil.Process(proc.proc.pid).memory_info().rss / 2**20
    finally:
        proc.stop()
    return elapsed, rss


def run(repeats: int = 3) -> list[dict]:
    rows = []
    for model, model_dir in (("distilbert", distilbert_dir()), ("minilm", MINILM_DIR)):
        for runtime, cache in (("torch", "none"), ("onnx", "empty"), ("onnx", "warm"), ("onnx-int8", "empty"),
                               ("onnx-int8", "warm")):
            with tempfile.TemporaryDirectory() as warm_dir:
                if cache == "warm":
                    measure(model_dir, runtime, warm_dir)
                samples = []
                for _ in range(repeats):
                    with tempfile.TemporaryDirectory() as empty_dir:
                        samples.append(measure(model_dir, runtime, warm_dir if cache == "warm" else empty_dir))
            rows.append({"model": model, "runtime": runtime, "export_cache": cache,
                         "ready_s_median": statistics.median(s[0] for s in samples),
                         "ready_s_max": max(s[0] for s in samples),
                         "rss_mib": statistics.median(s[1] for s in samples), "repeats": repeats})
            print(table(rows[-1:], list(rows[-1])), flush=True)
    print(table(rows, ["model", "runtime", "export_cache", "ready_s_median", "ready_s_max", "rss_mib"]))
    write_result("cold_start", {"rows": rows})
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    run(parser.parse_args().repeats)
