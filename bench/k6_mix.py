"""The original system's k6 scenario on `POST /bulk-predict` (10 VUs, 95% cache hits, one text per request)
against the original app (`bench.original_app`, each reading of its cache in turn) and this stack, in one
run; then the same mix at a fixed arrival rate (`--rate`: 818 req/s, 10x the original's reported 81.8)
against this stack, with where a miss spends its time meanwhile: the services' own histograms and each
process' CPU seconds (CPU per request holds up on a busy machine, where latencies measure the neighbours
too). `--profile`: py-spy flame graphs of that phase.

    python -m bench.k6_mix [--duration 60s] [--vus 10] [--rate 818] [--skip_original] [--profile]
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psutil

from bench.common import CO_LOCATED_PREDICTOR, MINILM_DIR, RESULTS, add_row, command_line, table, write_result
from bench.driver import k6, warm
from bench.original_app import CACHE_MODES
from harness.clients import metric
from harness.processes import PredictorProcess, RedisServer, ServerProcess, TransformerProcess, free_port, http_ready
from harness.sst2 import sentences

ORIGINAL = {"requests_per_s": 81.8, "p99_ms_below": 2000, "failures": 0,
            "note": "figures the original app's team reported for this k6 test on their machine"}
GOALS = {"x_original_app_as_written_requests_per_s": 30, "fixed_rate_p99_ms": 25, "fixed_rate_miss_p99_ms": 50}
COLUMNS = ["target", "requests", "requests_per_s", "p50_ms", "p95_ms", "p99_ms", "hit_p99_ms", "miss_p50_ms",
           "miss_p99_ms", "failed_requests", "dropped_iterations"]


class OriginalApp(ServerProcess):
    """`bench.original_app` under uvicorn (one worker, as described), on a free port."""

    def __init__(self, model_dir: Path, redis_url: str, cache_mode: str):
        self.port = free_port()
        super().__init__(f"original-app-{self.port}", [
            sys.executable, "-m", "uvicorn", "bench.original_app:create_app", "--factory", "--host", "127.0.0.1",
            "--port", str(self.port), "--no-access-log"],
            env={"ORIGINAL_MODEL_DIR": str(model_dir), "ORIGINAL_REDIS_URL": redis_url, "ORIGINAL_CACHE": cache_mode})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OriginalApp:
        super().start()
        self.wait_ready(http_ready(f"{self.url}/health"), timeout=180)
        return self


@contextmanager
def local_stack(predictor_extra: list[str] | None, transformer_extra: list[str] | None):
    """Redis, a predictor and a transformer on free ports, as `make serve` runs them (later flags win);
    `--predictor_protocol grpc-v2` among the transformer's flags calls the predictor's gRPC port."""
    with ExitStack() as running:  # stopped in reverse: the transformer, the predictor, Redis
        redis = running.enter_context(RedisServer().start())
        predictor = running.enter_context(
            PredictorProcess(MINILM_DIR, extra=[*CO_LOCATED_PREDICTOR, *(predictor_extra or [])]).start())
        extra = list(transformer_extra or [])
        grpc = "grpc-v2" in extra and extra[extra.index("grpc-v2") - 1] == "--predictor_protocol"
        host = predictor.grpc_target if grpc else f"127.0.0.1:{predictor.http_port}"
        transformer = running.enter_context(
            TransformerProcess(host, redis.url, protocol="grpc-v2" if grpc else "v2", extra=extra).start())
        yield redis, predictor, transformer


HISTOGRAMS = {"hop": ("transformer", "sentiment_predictor_latency_seconds"),
              "model_call": ("predictor", "request_predict_seconds")}


def counters(procs: dict) -> dict[str, float]:
    """What a miss's breakdown is the difference of: the sum and count of each histogram (every label
    set added) and each process' CPU seconds (all its threads)."""
    found = {}
    for key, (where, name) in HISTOGRAMS.items():
        found[f"{key}_s"], found[f"{key}_calls"] = (metric(procs[where], f"{name}_{part}") for part in ("sum", "count"))
    for key, process in procs.items():
        found[f"{key}_cpu_s"] = sum(psutil.Process(process.proc.pid).cpu_times()[:2])  # user + system
    return found


def breakdown(before: dict, after: dict, requests: int, seconds: float) -> dict:
    d = {key: after[key] - before[key] for key in after}
    calls = d["hop_calls"]
    return {**{f"{k}_mean_ms": d[f"{k}_s"] / d[f"{k}_calls"] * 1000 if d[f"{k}_calls"] else None for k in HISTOGRAMS},
            "predictor_calls": calls,
            "cpu_share_of_one_core": {k: d[f"{k}_cpu_s"] / seconds for k in ("transformer", "predictor")},
            "transformer_cpu_ms_per_request": d["transformer_cpu_s"] * 1000 / max(1, requests),
            "predictor_cpu_ms_per_call": d["predictor_cpu_s"] * 1000 / max(1, calls)}


def flame_graphs(procs: dict, name: str) -> dict[str, subprocess.Popen]:
    """py-spy sampling each process until interrupted, then writing bench/results/<name>_<process>.svg."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    RESULTS.mkdir(parents=True, exist_ok=True)
    return {k: subprocess.Popen([spy, "record", "--pid", str(p.proc.pid), "--nonblocking",
                                 "--output", str(RESULTS / f"{name}_{k}.svg")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for k, p in procs.items()}


def run(duration: str = "60s", vus: int = 10, hit_ratio: float = 0.95, rate: float = 818,
        skip_original: bool = False, profile: bool = False, transformer_extra: list[str] | None = None,
        predictor_extra: list[str] | None = None, name: str = "k6_mixed") -> dict:
    hot, cold = sentences("dev.tsv", 200), sentences("train.tsv", 5000)
    rows: list[dict] = []
    originals: dict[str, dict] = {}  # by cache mode
    with local_stack(predictor_extra=predictor_extra, transformer_extra=transformer_extra) as (
            redis, predictor, transformer):
        redis_db1 = redis.url.rsplit("/", 1)[0] + "/1"
        for mode in () if skip_original else CACHE_MODES:
            # Stopped when its run ends: its process must not take CPU from the runs that follow.
            with OriginalApp(MINILM_DIR, redis_db1, mode).start() as original:
                url = f"{original.url}/bulk-predict"
                warm(url, hot)
                originals[mode] = k6(url, hot, cold, duration, hit_ratio, vus)
                add_row(rows, {"target": f"original app, cache {mode}", **originals[mode]}, COLUMNS)
        url = f"{transformer.url}/bulk-predict"
        warm(url, hot)
        ours = add_row(rows, {"target": "this stack", **k6(url, hot, cold, duration, hit_ratio, vus)}, COLUMNS)
        time.sleep(2)  # let the last misses of the previous run drain
        procs = {"transformer": transformer, "predictor": predictor}
        spies = flame_graphs(procs, name) if profile else {}
        before, started = counters(procs), time.monotonic()
        fixed = k6(url, hot, cold, duration, hit_ratio, vus, rate)
        miss = breakdown(before, counters(procs), fixed["requests"], time.monotonic() - started)
        add_row(rows, {"target": "this stack, fixed rate", **fixed}, COLUMNS)
        for spy in spies.values():  # py-spy writes its graph when interrupted
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
    print(table(rows, COLUMNS))
    summary = {"this_stack_requests_per_s": ours["requests_per_s"], "this_stack_p99_ms": ours["p99_ms"],
               "x_original_reported_81_8": ours["requests_per_s"] / ORIGINAL["requests_per_s"],
               "fixed_rate_p99_ms": fixed["p99_ms"], "fixed_rate_hit_p99_ms": fixed["hit_p99_ms"],
               "fixed_rate_miss_p50_ms": fixed["miss_p50_ms"], "fixed_rate_miss_p99_ms": fixed["miss_p99_ms"],
               "fixed_rate_failed_requests": fixed["failed_requests"],
               "fixed_rate_dropped_iterations": fixed["dropped_iterations"],
               "fixed_rate_predictor_cpu_ms_per_call": miss["predictor_cpu_ms_per_call"],
               "fixed_rate_transformer_cpu_ms_per_request": miss["transformer_cpu_ms_per_request"]}
    for mode, base in originals.items():
        summary.update({f"original_app_{mode}_requests_per_s": base["requests_per_s"],
                        f"x_original_app_{mode}_requests_per_s": ours["requests_per_s"] / base["requests_per_s"],
                        f"original_app_{mode}_p99_ms": base["p99_ms"]})
    print(json.dumps({**summary, "fixed_rate_miss": miss}, indent=2))
    write_result(name, {
        "summary": summary, "goals": GOALS, "series": rows, "original_reported": ORIGINAL, "fixed_rate_miss": miss,
        "flame_graphs": [f"{name}_{k}.svg" for k in spies],
        "transformer_extra": transformer_extra or [], "predictor_extra": predictor_extra or []})
    return summary


if __name__ == "__main__":
    command_line(run, __doc__, skip_original="only this stack (quicker, for tuning)",
                 profile="py-spy flame graphs of the fixed-rate phase",
                 transformer_extra="extra transformer flags, space separated",
                 predictor_extra="extra predictor flags, space separated",
                 name="result file name under bench/results/")
