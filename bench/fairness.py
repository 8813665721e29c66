"""Fairness of scheduling: the predictor of git revision `--before` (its export, the same flags) beside this
checkout's. A one-text request alone and beside a maximum-size one (31 texts of 512 tokens and a short one, just
under --max_request_tokens); short requests' p50/p99 under k6 load without and with 10% of 256-320-token ones.
Every ratio comes from one run of one server.

    python -m bench.fairness --before REVISION [--models minilm,distilbert] [--mixed_models minilm]
                             [--seconds 20] [--clients 8] [--repeats 2]
"""

from __future__ import annotations

import random
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from bench.common import add_row, command_line, export_revision, model_dir, sentence_of_tokens, table, write_result
from bench.driver import k6
from harness.processes import REPO, PredictorProcess
from harness.sst2 import sentences

LONG = "a long sentence about a film " * 100  # 600 words: truncated to 512 tokens
SHORT = "I love this movie"
TOKEN_BUDGET_BASELINE = "814a616"
"""The last revision before token-budgeted fair passes (the README's "before")."""
BESIDE_COLUMNS = ["model", "server", "short_alone_s", "one_512_token_text_s", "large_alone_s", "large_beside_s",
                  "short_beside_large_s"]
MIXED_COLUMNS = ["model", "server", "long_share", "short_requests", "long_requests", "short_p50_ms", "short_p99_ms",
                 "long_p50_ms", "requests_per_s", "failed_requests"]


def timed(client: httpx.Client, url: str, texts: list[str]) -> float:
    start = time.monotonic()
    r = client.post(url, json={"instances": texts})
    elapsed = time.monotonic() - start
    if r.status_code != 200:
        raise RuntimeError(f"{r.status_code}: {r.text[:200]}")
    return elapsed


def beside_large(server: PredictorProcess, repeats: int) -> dict:
    """A one-text request's latency alone and while a maximum-size request runs."""
    url = f"{server.url}/v1/models/sentiment:predict"
    large = [f"{i} {LONG}" for i in range(31)] + ["a short one to stay under the budget"]
    with httpx.Client(timeout=600) as client:
        for _ in range(3):
            timed(client, url, [SHORT])
            timed(client, url, [LONG])
        alone = statistics.median(timed(client, url, [SHORT]) for _ in range(7))
        one_pass = statistics.median(timed(client, url, [LONG]) for _ in range(3))
        large_alone = timed(client, url, large)
        waits, large_times = [], []
        with httpx.Client(timeout=600) as other, ThreadPoolExecutor(1) as pool:
            for _ in range(repeats):
                sent = pool.submit(timed, other, url, large)
                time.sleep(0.5)  # as in issue 14: the short request is sent 0.5 s after the large one
                waits.append(timed(client, url, [SHORT]))
                large_times.append(sent.result())
    return {"short_alone_s": alone, "one_512_token_text_s": one_pass, "large_alone_s": large_alone,
            "large_beside_s": statistics.median(large_times), "short_beside_large_s": max(waits),
            "short_beside_large_all_s": waits}


def mixed_load(server: PredictorProcess, seconds: float, clients: int, long_share: float) -> dict:
    """k6's closed loop, one text per request: an SST-2 sentence, or in `long_share` of them one of 256-320 tokens."""
    rng = random.Random(0)
    long_texts = [sentence_of_tokens(rng.randint(256, 320)) for _ in range(64)]
    result = k6(f"{server.url}/v1/models/sentiment:predict", sentences("dev.tsv", 400), long_texts,
                f"{seconds:g}s", hit_ratio=1 - long_share, vus=clients, body="instances")
    # The scenario's repeated texts ("hits") are the short ones; its unique ones ("misses") the long.
    return {"short_requests": result["hit_requests"], "long_requests": result["miss_requests"],
            "short_p50_ms": result["hit_p50_ms"], "short_p99_ms": result["hit_p99_ms"],
            "long_p50_ms": result["miss_p50_ms"] if long_share else None,
            "requests_per_s": result["requests_per_s"], "failed_requests": result["failed_requests"]}


def run(before: str, models=("minilm", "distilbert"), mixed_models=("minilm",), seconds: float = 20,
        clients: int = 8, repeats: int = 2) -> dict:
    commit, source = export_revision(before)
    servers = {"before": source, "after": REPO}  # where each predictor's code is
    fairness_rows, mixed_rows, summary = [], [], {}
    for model in dict.fromkeys((*models, *mixed_models)):
        for name, code in servers.items():
            with PredictorProcess(model_dir(model), cwd=code).start() as server:
                if model in models:
                    row = add_row(fairness_rows, {"model": model, "server": name, **beside_large(server, repeats)},
                                  BESIDE_COLUMNS)
                    beside = row["short_beside_large_s"]
                    summary[f"{model}_{name}_short_beside_large_s"] = beside
                    summary[f"{model}_{name}_short_beside_large_vs_alone"] = beside / row["short_alone_s"]
                if model in mixed_models:
                    short_p99 = {}
                    for share in (0.0, 0.1):
                        row = add_row(mixed_rows, {"model": model, "server": name, "long_share": share,
                                                   **mixed_load(server, seconds, clients, share)}, MIXED_COLUMNS)
                        short_p99[share] = row["short_p99_ms"]
                    summary[f"{model}_{name}_mixed_short_p99_ratio"] = short_p99[0.1] / short_p99[0.0]
    print(table(fairness_rows, BESIDE_COLUMNS))
    print(table(mixed_rows, MIXED_COLUMNS))
    for key, value in summary.items():
        print(f"{key}: {value:.2f}")
    write_result("fairness", {"baseline": before, "baseline_commit": commit,
                              "clients": clients, "seconds": seconds, "fairness": fairness_rows,
                              "mixed": mixed_rows, "summary": summary})
    return summary


if __name__ == "__main__":
    command_line(run, __doc__, models="models for the beside-a-large-request test", repeats="large requests per server",
                 mixed_models="models for the mixed-length load", seconds="length of each mixed-load phase",
                 before=f"git revision whose predictor is 'before' (the README's: {TOKEN_BUDGET_BASELINE})")
