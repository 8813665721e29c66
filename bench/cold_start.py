"""Predictor cold start: process start -> /v2/models/sentiment/ready (load + warm-up), per model.

    python -m bench.cold_start [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import psutil

from bench.common import MINILM_DIR, distilbert_dir, table, write_result
from tests.processes import PredictorProcess, http_ready


def measure(model_dir, runtime: str) -> tuple[float, float]:
    proc = PredictorProcess(model_dir, extra=["--runtime", runtime])
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
        for runtime in ("torch", "torch-int8"):
            samples = [measure(model_dir, runtime) for _ in range(repeats)]
            rows.append({"model": model, "runtime": runtime,
                         "ready_s_median": statistics.median(s[0] for s in samples),
                         "ready_s_max": max(s[0] for s in samples),
                         "rss_mib": statistics.median(s[1] for s in samples), "repeats": repeats})
            print(table(rows[-1:], list(rows[-1])), flush=True)
    print(table(rows, ["model", "runtime", "ready_s_median", "ready_s_max", "rss_mib"]))
    write_result("cold_start", {"rows": rows})
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    run(parser.parse_args().repeats)
