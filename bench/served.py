"""Served predictor throughput vs concurrency, side by side with raw offline throughput and two
servers without batching (same stack, one forward pass per request: --max_batch_size 1): one with
the same runtime, and the typical naive server, torch eager fp32. Load: bench/k6/mixed.js, one sentence
per request on v1 predict, `concurrency` virtual users. With `--baseline REVISION`, the batching
server of that git revision too (same flags; its predictor/ and serving/ exported), so a
before/after comes from one run; without it, no revision is compared.

    python -m bench.served [--model distilbert|minilm] [--runtime torch] [--seconds 15] [--baseline REV]
                           [--concurrencies 1,8,32,64] [--max_wait_ms 2]
"""

from __future__ import annotations

import json

from bench.common import SENTENCE, add_row, command_line, export_revision, model_dir, table, write_result
from bench.driver import k6
from bench.raw_model import throughput
from harness.processes import REPO, PredictorProcess
from predictor.classifier import SentimentClassifier


def run(model: str = "distilbert", runtime: str = "torch", seconds: int = 15,
        concurrencies=(1, 8, 32, 64), max_wait_ms: float = 2.0, baseline: str | None = None) -> dict:
    directory = model_dir(model)
    classifier = SentimentClassifier(directory, runtime=runtime)
    raw = {b: throughput(classifier, b, len(classifier.encode([SENTENCE])[0].ids), 5) for b in (1, 32)}
    del classifier
    print(f"raw offline ({runtime}, {model}): batch 1 {raw[1]:.1f}/s, batch 32 {raw[32]:.1f}/s", flush=True)
    rows = []
    servers = {
        "batching": ["--runtime", runtime, "--max_batch_size", "32", "--max_wait_ms", str(max_wait_ms)],
        "no-batching": ["--runtime", runtime, "--max_batch_size", "1", "--max_wait_ms", "0"],
        "naive-torch": ["--runtime", "torch", "--max_batch_size", "1", "--max_wait_ms", "0"],
    }
    sources = {}  # servers run from another revision's export
    if baseline:
        commit, sources[f"batching@{commit[:8]}"] = export_revision(baseline)
        servers[f"batching@{commit[:8]}"] = servers["batching"]
    for name, extra in servers.items():
        with PredictorProcess(directory, extra=extra, cwd=sources.get(name, REPO)).start() as server:
            url = f"{server.url}/v1/models/sentiment:predict"
            k6(url, [SENTENCE], [], "3s", hit_ratio=1.0, vus=8, body="instances")  # warm-up
            for c in concurrencies:
                result = k6(url, [SENTENCE], [], f"{seconds}s", hit_ratio=1.0, vus=c, body="instances")
                add_row(rows, {"server": name, "concurrency": c, **result},
                        ["server", "concurrency", "requests_per_s", "p50_ms", "p99_ms"])
    at32 = {r["server"]: r["requests_per_s"] for r in rows if r["concurrency"] == 32}
    summary = {"raw_batch1_seq_per_s": raw[1], "raw_batch32_seq_per_s": raw[32],
               "served_32_vs_raw_batch32": at32["batching"] / raw[32],
               "served_32_vs_no_batching_same_runtime_32": at32["batching"] / at32["no-batching"],
               "served_32_vs_naive_torch_32": at32["batching"] / at32["naive-torch"]}
    for name in (n for n in servers if "@" in n):
        for c in concurrencies:
            now, before = ({r["server"]: r for r in rows if r["concurrency"] == c}[k] for k in ("batching", name))
            summary[f"vs_{name}_at_{c}"] = {"requests_per_s": now["requests_per_s"] / before["requests_per_s"],
                                            "p99_ms": now["p99_ms"] / before["p99_ms"]}
    print(table(rows, ["server", "concurrency", "requests_per_s", "p50_ms", "p95_ms", "p99_ms", "failed_requests"]))
    print(json.dumps(summary, indent=2))
    write_result(f"served_{model}_{runtime}", {"model": model, "runtime": runtime, "sentence": SENTENCE,
                                               "rows": rows, "summary": summary})
    return summary


if __name__ == "__main__":
    command_line(run, __doc__, baseline="git revision whose batching server runs beside this checkout's")
