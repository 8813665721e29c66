"""Cache misses at a fixed arrival rate on a predictor of its own: one pass at a time against two at once.

The deployment gives the predictor its own pod and cores, so this runs the predictor alone (no
transformer or Redis beside it, only the load) and sends what reaches it in the k6 mix: one SST-2 sentence per
request (each made unique), at a fixed arrival rate `--rate` (default 41/s = 5% of 818; k6
constant-arrival-rate, bench/k6/mixed.js), over v2 REST. Each setting, PASSESxTHREADS
(`--parallel_passes` x `--threads`: 1x1, 1x2 = the default on 2 CPUs, 2x1), is a fresh predictor
in the same run, on the same sentences; latency is k6's, p50/p90/p99/max in ms. Ratios are
against `--baseline`, one of the settings (default 1x1).

    python -m bench.parallel_passes [--rate 41] [--seconds 30] [--runtime onnx] [--settings 1x1,1x2,2x1]
                                    [--baseline 1x1]
"""

from __future__ import annotations

from bench.common import MINILM_DIR, add_row, command_line, load_average, table, write_result
from bench.driver import k6
from harness.processes import PredictorProcess
from harness.sst2 import sentences

COLUMNS = ["parallel_passes", "threads", "requests", "p50_ms", "p90_ms", "p99_ms", "max_ms", "failed_requests",
           "dropped_iterations"]


def run(rate: float = 41, seconds: float = 30, runtime: str = "onnx", settings=("1x1", "1x2", "2x1"),
        baseline: str = "1x1") -> dict:
    if baseline not in settings:
        raise ValueError(f"the baseline {baseline} must be one of the settings {settings}")
    texts = sentences("train.tsv", 5000)
    rows = []
    load_before = load_average()
    for n, threads in (map(int, setting.split("x")) for setting in settings):
        extra = ["--runtime", runtime, "--threads", str(threads), "--parallel_passes", str(n)]
        with PredictorProcess(MINILM_DIR, extra=extra).start() as server:
            url = f"{server.url}/v2/models/sentiment/infer"
            k6(url, [], texts[:20], "2s", hit_ratio=0.0, rate=rate, body="v2")  # warm the model
            add_row(rows, {"parallel_passes": n, "threads": threads,
                           **k6(url, [], texts, f"{seconds:g}s", hit_ratio=0.0, rate=rate, body="v2")}, COLUMNS)
    print(table(rows, COLUMNS))
    base = next(r for r in rows if f"{r['parallel_passes']}x{r['threads']}" == baseline)
    summary = {f"p99_ratio_{r['parallel_passes']}x{r['threads']}_vs_{baseline}": r["p99_ms"] / base["p99_ms"]
               for r in rows if r is not base}
    print(summary)
    write_result("parallel_passes", {
        "description": __doc__.split("\n\n")[0], "rate_per_s": rate, "seconds": seconds, "runtime": runtime,
        "model": "shared MiniLM", "series": rows, "summary": summary, "load_average_before": load_before})
    return summary


if __name__ == "__main__":
    command_line(run, __doc__, baseline="the setting the p99 ratios are against")
