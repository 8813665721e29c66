"""Cache misses at a fixed arrival rate on a predictor of its own: one pass at a time against two at once.

The deployment gives the predictor its own pod and cores, so this runs the predictor alone (no
transformer, Redis or k6 beside it) and sends what reaches it in the k6 mix: one SST-2 sentence per
request (each made unique), Poisson arrivals at `--rate` (default 41/s = 5% of 818), over v2 REST.
Each setting (`--parallel_passes` x `--threads`: 1x1, 1x2 = the default on 2 CPUs, 2x1) is a
fresh predictor in the same run, on the same sentences; latency is the client's (aiohttp),
p50/p90/p99/max in ms.

    python -m bench.parallel_passes [--rate 41] [--seconds 30] [--runtime onnx] [--settings 1x1,1x2,2x1]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

import aiohttp
import numpy as np

from bench.common import MINILM_DIR, load_average, table, write_result
from bench.k6_mix import sentences
from harness.processes import PredictorProcess

COLUMNS = ["parallel_passes", "threads", "requests", "p50_ms", "p90_ms", "p99_ms", "max_ms", "errors"]


async def open_loop(url: str, texts: list[str], rate: float, seconds: float, seed: int = 0) -> dict:
    """Send one text per request at Poisson arrivals of `rate`/s for `seconds`; client latencies."""
    rng = random.Random(seed)
    latencies: list[float] = []
    errors = 0

    async def one(session: aiohttp.ClientSession, text: str) -> None:
        nonlocal errors
        body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}]}
        start = time.perf_counter()
        async with session.post(url, json=body) as response:
            await response.read()
            if response.status != 200:
                errors += 1
                return
        latencies.append(time.perf_counter() - start)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for text in texts[:20]:  # warm the connection pool and the model
            await one(session, text)
        latencies.clear()
        tasks = []
        start = next_at = time.perf_counter()
        i = 0
        while next_at - start < seconds:
            next_at += rng.expovariate(rate)
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            tasks.append(asyncio.create_task(one(session, f"{texts[i % len(texts)]} ({i})")))
            i += 1
        await asyncio.gather(*tasks)
    ms = np.array(latencies) * 1000
    p50, p90, p99, top = (float(x) for x in np.percentile(ms, [50, 90, 99, 100])) if len(ms) else (None,) * 4
    return {"requests": len(ms), "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": top, "errors": errors}


def run(rate: float = 41, seconds: float = 30, runtime: str = "onnx", settings=((1, 1), (1, 2), (2, 1))) -> dict:
    texts = sentences("train.tsv", 5000)
    rows = []
    load_before = load_average()
    for n, threads in settings:
        server = PredictorProcess(MINILM_DIR, extra=["--runtime", runtime, "--threads", str(threads),
                                                     "--parallel_passes", str(n)]).start()
        try:
            url = f"{server.url}/v2/models/sentiment/infer"
            rows.append({"parallel_passes": n, "threads": threads, **asyncio.run(open_loop(url, texts, rate, seconds))})
        finally:
            server.stop()
        print(table(rows[-1:], COLUMNS), flush=True)
    print(table(rows, COLUMNS))
    base = rows[0]
    summary = {f"p99_ratio_{r['parallel_passes']}x{r['threads']}_vs_{base['parallel_passes']}x{base['threads']}":
               float(r["p99_ms"] / base["p99_ms"]) for r in rows[1:]}
    print(summary)
    write_result("parallel_passes", {
        "description": __doc__.split("\n\n")[0], "rate_per_s": rate, "seconds": seconds, "runtime": runtime,
        "model": "shared MiniLM", "series": rows, "summary": summary, "load_average_before": load_before})
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=41)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--runtime", default="onnx")
    parser.add_argument("--settings", default="1x1,1x2,2x1", help="comma-separated PASSESxTHREADS")
    args = parser.parse_args()
    run(args.rate, args.seconds, args.runtime,
        tuple(tuple(int(x) for x in s.split("x")) for s in args.settings.split(",")))
