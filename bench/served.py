"""Servers side by side under one k6 load (`side_by_side`, bench.triton's too), and the served predictor: the
batching server beside the same runtime without batching and the naive server (torch eager fp32), one sentence
per v1 request, and beside the raw offline throughput of both runtimes (the forward pass alone, in-process, on
the same sentence, batch 1 and 32); `--baseline REV` adds that revision's batching server.

    python -m bench.served [--model distilbert|minilm] [--runtime torch] [--seconds 15] [--baseline REV]
                           [--concurrencies 1,8,32,64] [--max_wait_ms 2]
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterable

from bench.common import SENTENCE, add_row, command_line, export_revision, model_dir, table, write_result
from bench.driver import k6
from harness.clients import metric
from harness.processes import PredictorProcess, ServerProcess
from predictor.classifier import SentimentClassifier


def schedule(servers: Iterable[str], rounds: int) -> list[tuple[int, str]]:
    """(round, server) in the order they run, rotated every round: no server always runs first (after an export)."""
    servers = list(servers)
    return [(r, servers[(r + i) % len(servers)]) for r in range(rounds) for i in range(len(servers))]


PASS_COUNTERS = {"text": 'sentiment_predictor_pass_tokens_total{kind="text"}',
                 "padding": 'sentiment_predictor_pass_tokens_total{kind="padding"}',
                 "passes": "sentiment_predictor_batch_texts_count", "texts": "sentiment_predictor_batch_texts_sum"}


def pass_counters(server: ServerProcess) -> dict[str, float]:
    """The predictor's pass counters so far; a peer serving the same series elsewhere names it `pass_metrics`."""
    where = getattr(server, "pass_metrics", server)
    return {key: metric(where, sample) for key, sample in PASS_COUNTERS.items()}


def pass_figures(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    """What the passes between two counter readings computed (tokens per text: the same on both sides of one load)."""
    d = {k: after[k] - before[k] for k in PASS_COUNTERS}
    tokens = d["text"] + d["padding"]
    return {"padding_share": d["padding"] / tokens if tokens else None,
            "texts_per_pass": d["texts"] / d["passes"] if d["passes"] else None,
            "tokens_per_text": d["text"] / d["texts"] if d["texts"] else None}


COLUMNS = ["server", "round", "concurrency", "requests_per_s", "p50_ms", "p99_ms", "failed_requests",
           "padding_share", "texts_per_pass"]


def side_by_side(servers: dict[str, Callable[[], ServerProcess]], path: str, load: dict, concurrencies: Iterable[int],
                 seconds: int, rounds: int = 1, first: Callable[[str, ServerProcess], None] | None = None,
                 **tags) -> list[dict]:
    """A row per round, server and concurrency (`tags` on each): k6 with `load` (bench.driver.k6's arguments) on
    `path`, after a warm-up; `first(name, server)` runs before a server's first load."""
    rows = []
    for round_, name in schedule(servers, rounds):
        with servers[name]() as server:
            if first and round_ == 0:
                first(name, server)
            k6(f"{server.url}{path}", duration="3s", vus=8, **load)  # warm-up
            for c in concurrencies:
                before = pass_counters(server)
                result = k6(f"{server.url}{path}", duration=f"{seconds}s", vus=c, **load)
                add_row(rows, {**tags, "server": name, "round": round_, "concurrency": c, **result,
                               **pass_figures(before, pass_counters(server))}, [*tags, *COLUMNS])
    return rows


SUMMARISED = ("requests_per_s", "p50_ms", "p99_ms", "padding_share", "texts_per_pass", "tokens_per_text")


def summarise(rows: list[dict], reference: str, by: tuple[str, ...] = ("concurrency",)) -> list[dict]:
    """Per `by` and server: the median of its rounds, and its throughput and p99 as ratios to `reference`'s."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((*(row[k] for k in by), row["server"]), []).append(row)
    summary = []
    for (*keys, server), runs in groups.items():
        entry = {**dict(zip(by, keys, strict=True)), "server": server, "rounds": len(runs)}
        for key in SUMMARISED:
            values = [r[key] for r in runs if r.get(key) is not None]
            entry[key] = statistics.median(values) if values else None
        summary.append(entry)
    for entry in summary:
        base = next((e for e in summary if e["server"] == reference and all(e[k] == entry[k] for k in by)), None)
        entry["throughput_vs_reference"] = entry["requests_per_s"] / base["requests_per_s"] if base else None
        entry["p99_vs_reference"] = entry["p99_ms"] / base["p99_ms"] if base else None
    return summary


def raw_throughput(model_dir, runtime: str, seconds: float = 5) -> dict[str, float]:
    """Sequences/s of forward passes alone on SENTENCE (16 tokens), by batch size."""
    classifier = SentimentClassifier(model_dir, runtime=runtime)
    rates = {}
    for batch in (1, 32):
        encoded = classifier.encode([SENTENCE] * batch)
        classifier.predict_encoded(encoded)  # warm-up
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            classifier.predict_encoded(encoded)
            done += batch
        rates[f"batch_{batch}"] = done / (time.perf_counter() - start)
    return rates


def run(model: str = "distilbert", runtime: str = "torch", seconds: int = 15,
        concurrencies=(1, 8, 32, 64), max_wait_ms: float = 2.0, baseline: str | None = None) -> dict:
    directory = model_dir(model)
    raw = {name: raw_throughput(directory, name) for name in dict.fromkeys((runtime, "torch"))}
    print(f"raw offline sequences/s ({model}): {raw}", flush=True)
    flags = {"batching": ["--runtime", runtime, "--max_batch_size", "32", "--max_wait_ms", str(max_wait_ms)],
             "no-batching": ["--runtime", runtime, "--max_batch_size", "1", "--max_wait_ms", "0"],
             "naive-torch": ["--runtime", "torch", "--max_batch_size", "1", "--max_wait_ms", "0"]}
    servers = {name: lambda args=args: PredictorProcess(directory, extra=args).start() for name, args in flags.items()}
    if baseline:  # that revision's code with the batching server's flags
        commit, source = export_revision(baseline)
        baseline = f"batching@{commit[:8]}"
        servers[baseline] = lambda: PredictorProcess(directory, extra=flags["batching"], cwd=source).start()
    load = {"hot": [SENTENCE], "cold": [], "hit_ratio": 1.0, "body": "instances"}
    rows = side_by_side(servers, "/v1/models/sentiment:predict", load, concurrencies, seconds)
    medians = {(e["server"], e["concurrency"]): e for e in summarise(rows, reference=baseline or "batching")}
    summary = {"raw_seq_per_s": raw, "raw_batch32_seq_per_s": raw[runtime]["batch_32"]}
    if 32 in concurrencies:
        at32 = {server: e["requests_per_s"] for (server, c), e in medians.items() if c == 32}
        summary.update({"served_32_vs_raw_batch32": at32["batching"] / raw[runtime]["batch_32"],
                        "served_32_vs_no_batching_same_runtime_32": at32["batching"] / at32["no-batching"],
                        "served_32_vs_naive_torch_32": at32["batching"] / at32["naive-torch"]})
    for c in concurrencies if baseline else ():
        now = medians[("batching", c)]
        summary[f"vs_{baseline}_at_{c}"] = {"requests_per_s": now["throughput_vs_reference"],
                                            "p99_ms": now["p99_vs_reference"]}
    print(table(rows, [*COLUMNS, "p95_ms"]))
    print(json.dumps(summary, indent=2))
    write_result(f"served_{model}_{runtime}", {"model": model, "runtime": runtime, "sentence": SENTENCE,
                                               "rows": rows, "summary": summary})
    return summary


if __name__ == "__main__":
    command_line(run, __doc__, baseline="git revision whose batching server runs beside this checkout's")
