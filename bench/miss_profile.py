"""Where a cache miss spends its time while hits are flowing: metrics and py-spy, not guesses.

Runs the fixed-rate k6 mix (`bench.k6_mix`'s scenario) against the local stack and, meanwhile,
samples the transformer and the predictor with py-spy (`record --format raw`, on-CPU samples),
and reads the services' histograms before and after. The breakdown of a miss (means):

- k6 miss latency (client's view, its own scheduling included);
- transformer -> predictor call (`sentiment_predictor_latency_seconds`), of which the predictor's
  model call (KServe's `request_predict_seconds`: batch wait + tokenize + forward);
- the rest of the transformer's time (event-loop queueing, Redis, JSON) is the difference.

And where each process burns CPU (top functions by on-CPU samples), plus the CPU seconds each
process used (from /proc), so oversubscription shows.

    python -m bench.miss_profile [--rate 818] [--seconds 30] [--predictor_extra "..."] [--transformer_extra "..."]
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench.common import command_line, table, write_result
from bench.driver import k6, warm
from bench.stack import local_stack
from harness.clients import metric
from harness.sst2 import sentences


def histogram_sums(server, name: str) -> tuple[float, float]:
    """(sum, count) of a Prometheus histogram, every label set added."""
    return metric(server, f"{name}_sum"), metric(server, f"{name}_count")


def snapshot(procs: dict) -> dict:
    """The counters a miss's breakdown is the difference of: the hop's and the model call's
    histograms, and each process' CPU seconds."""
    return {"hop": histogram_sums(procs["transformer"], "sentiment_predictor_latency_seconds"),
            "predict": histogram_sums(procs["predictor"], "request_predict_seconds"),
            "cpu": {k: cpu_seconds(p) for k, p in procs.items()}}


def cpu_seconds(server) -> float:
    """User + system CPU seconds of a server process, all its threads."""
    times = psutil.Process(server.proc.pid).cpu_times()
    return times.user + times.system


def top_functions(raw: Path, limit: int = 12) -> list[dict]:
    """Top functions by self (leaf) and inclusive on-CPU samples from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [re.sub(r" \(.*?:\d+\)$", "", f) for f in stack.split(";")]
        frames = [re.sub(r"\s*\((.*?)\)$", r" (\1)", f) for f in frames]
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    return [{"function": f, "self_share": n / total, "inclusive_share": inclusive[f] / total}
            for f, n in own.most_common(limit)]


def run(rate: float = 818, seconds: int = 30, hit_ratio: float = 0.95, predictor_extra: list[str] | None = None,
        transformer_extra: list[str] | None = None, name: str = "miss_profile") -> dict:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    hot, cold = sentences("dev.tsv", 200), sentences("train.tsv", 5000)
    with local_stack(predictor_extra=predictor_extra, transformer_extra=transformer_extra) as (
            _redis, predictor, transformer), tempfile.TemporaryDirectory() as tmp:
        url = f"{transformer.url}/bulk-predict"
        warm(url, hot)
        procs = {"transformer": transformer, "predictor": predictor}
        before = snapshot(procs)
        spies = {k: subprocess.Popen([spy, "record", "--pid", str(p.proc.pid), "--duration", str(seconds),
                                      "--rate", "100", "--nonblocking", "--format", "raw",
                                      "--output", str(Path(tmp, f"{k}.txt"))],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for k, p in procs.items()}
        threads = {k: psutil.Process(p.proc.pid).num_threads() for k, p in procs.items()}
        started = time.monotonic()
        result = k6(url, hot, cold, f"{seconds}s", hit_ratio, rate=rate)
        elapsed = time.monotonic() - started
        for p in spies.values():
            p.wait(60)
        after = snapshot(procs)
        profiles = {k: top_functions(Path(tmp, f"{k}.txt")) for k in procs if Path(tmp, f"{k}.txt").exists()}

    def mean_ms(key: str) -> float | None:
        total = after[key][0] - before[key][0]
        count = after[key][1] - before[key][1]
        return total / count * 1000 if count else None

    calls = after["hop"][1] - before["hop"][1]
    cpu = {k: after["cpu"][k] - before["cpu"][k] for k in procs}
    breakdown = {
        "k6_miss_p50_ms": result["miss_p50_ms"], "k6_miss_p99_ms": result["miss_p99_ms"],
        "transformer_to_predictor_mean_ms": mean_ms("hop"),
        "predictor_model_call_mean_ms": mean_ms("predict"),
        "predictor_calls": calls,
        "cpu_share_of_one_core": {k: seconds_used / elapsed for k, seconds_used in cpu.items()},
        # CPU per request holds up on a busy machine, where latencies measure the neighbours too.
        "transformer_cpu_ms_per_request": cpu["transformer"] * 1000 / max(1, result["requests"]),
        "predictor_cpu_ms_per_call": cpu["predictor"] * 1000 / max(1, calls),
        "threads": threads,
    }
    print(table([result], ["requests_per_s", "p50_ms", "p99_ms", "hit_p99_ms", "miss_p50_ms", "miss_p99_ms",
                           "failed_requests", "dropped_iterations"]))
    print({k: (round(v, 2) if isinstance(v, float) else v) for k, v in breakdown.items()})
    for k, rows in profiles.items():
        print(f"\n{k}: top functions by on-CPU samples")
        print(table(rows, ["function", "self_share", "inclusive_share"]))
    write_result(name, {"description": __doc__.split("\n\n")[0], "load": result, "breakdown": breakdown,
                        "profiles": profiles, "predictor_extra": predictor_extra or [],
                        "transformer_extra": transformer_extra or []})
    return breakdown


if __name__ == "__main__":
    command_line(run, __doc__, predictor_extra="extra predictor flags, space separated",
                 transformer_extra="extra transformer flags, space separated",
                 name="result file name under bench/results/")
