"""Fault soak: steady k6 load (bench/k6/soak.js) through the local stack while Redis and the predictor are
broken in every way we know (the README's Reliability section lists them), then every answer checked against
the predictor's own. A 5xx counts as explained only while the predictor was down, and only with a message.

    python -m bench.soak [--seconds 120] [--clients 16]
"""

from __future__ import annotations

import collections
import functools
import json
import random
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import redis

from bench.common import MINILM_DIR, command_line, table, write_result
from bench.driver import run_scenario
from harness.clients import predictor_answers, rows_to_probs
from harness.processes import PredictorProcess, RedisServer, TransformerProcess, free_port
from harness.sst2 import sentences


def load(url: str, pool: list[str], seconds: int, clients: int) -> list[dict]:
    """bench/k6/soak.js for `seconds`: every answer's texts, status, body, start and end (epoch s)."""
    with tempfile.TemporaryDirectory() as tmp:
        pool_file, log = Path(tmp, "pool.json"), Path(tmp, "answers.jsonl")
        pool_file.write_text(json.dumps(pool))
        env = {"URL": url, "POOL_FILE": pool_file, "VUS": clients, "DURATION": f"{seconds}s"}
        run_scenario("soak.js", env, "--log-format", "json", "--console-output", str(log), check=True,
                     stdout=subprocess.DEVNULL)
        answers = [json.loads(json.loads(line)["msg"]) for line in log.read_text().splitlines()]
    for a in answers:
        try:
            a["body"] = json.loads(a["body"] or "{}")
        except json.JSONDecodeError:  # not the service's JSON (a proxy's or a half-closed connection's)
            a["body"] = {"error": a["body"]}
        a["start"], a["end"] = a["start"] / 1000, a["end"] / 1000
    return answers


def run(seconds: int = 120, clients: int = 16) -> dict:
    redis_port, http_port, grpc_port = free_port(), free_port(), free_port()
    predictor = functools.partial(PredictorProcess, MINILM_DIR, http_port=http_port, grpc_port=grpc_port)
    procs = {"redis": RedisServer(redis_port).start(), "predictor": predictor().start()}
    procs["transformer"] = TransformerProcess(f"127.0.0.1:{http_port}", procs["redis"].url,
                                              extra=["--predictor_deadline_s", "30"]).start()
    url = f"{procs['transformer'].url}/v1/models/sentiment:predict"
    stop = threading.Event()
    faults: collections.Counter = collections.Counter()
    predictor_gaps: list[list[float]] = []  # [killed at, ready again at]
    rss = collections.defaultdict(float)

    def sample_rss() -> None:
        while not stop.is_set():
            for name, proc in procs.items():
                if proc.alive:
                    rss[name] = max(rss[name], psutil.Process(proc.proc.pid).memory_info().rss / 2**20)
            time.sleep(0.5)

    def inject() -> None:
        rng = random.Random(0)
        while not stop.wait(rng.uniform(3, 6)):
            fault = rng.choice(["redis-restart", "client-kill", "redis-freeze", "redis-sleep", "predictor-restart"])
            faults[fault] += 1
            if fault == "redis-restart":
                procs["redis"].kill()
                stop.wait(1)
                procs["redis"] = RedisServer(redis_port).start()
            elif fault == "client-kill":
                redis.Redis(port=redis_port).client_kill_filter(_type="normal", skipme=True)
            elif fault == "redis-freeze":
                procs["redis"].proc.send_signal(signal.SIGSTOP)
                stop.wait(2)
                procs["redis"].proc.send_signal(signal.SIGCONT)
            elif fault == "redis-sleep":
                redis.Redis(port=redis_port, socket_timeout=10).execute_command("DEBUG", "SLEEP", "2")
            else:
                gap = [time.time(), float("inf")]  # epoch: k6 stamps its requests with Date.now()
                predictor_gaps.append(gap)
                procs["predictor"].kill()
                procs["predictor"] = predictor().start()
                gap[1] = time.time()

    workers = [threading.Thread(target=sample_rss), threading.Thread(target=inject)]
    try:
        for w in workers:
            w.start()
        results = load(url, sentences("dev.tsv", 300), seconds, clients)
        stop.set()
        for w in workers:
            w.join(150)
        answered = [r for r in results if r["status"] == 200]
        truth = predictor_answers(procs["predictor"], (t for r in answered for t in r["texts"]))
    finally:
        stop.set()
        for proc in procs.values():
            proc.stop()
    statuses = collections.Counter(r["status"] for r in results)
    wrong = sum(1 for r in answered if not np.allclose(
        rows_to_probs(r["body"]["predictions"]), np.array([truth[t] for t in r["texts"]]), atol=1e-4))
    errors = [r for r in results if r["status"] >= 500]
    unexplained = [e for e in errors if not any(e["start"] <= gap_end and e["end"] >= gap_start
                                                for gap_start, gap_end in predictor_gaps)]
    no_message = [e for e in errors
                  if not any(why in str(e["body"].get("error", "")) for why in ("not reachable", "did not answer"))]
    report = {"seconds": seconds, "clients": clients, "requests": len(results), "faults": dict(faults),
              "statuses": {str(k): v for k, v in sorted(statuses.items())},
              "5xx": len(errors), "5xx_outside_predictor_gaps": len(unexplained),
              "5xx_without_message": len(no_message), "wrong_answers": wrong,
              "predictor_gap_s": [round(b - a, 1) for a, b in predictor_gaps],
              "max_rss_mib": {k: round(v) for k, v in rss.items()}}
    print(table([report], ["requests", "faults", "statuses", "5xx", "5xx_outside_predictor_gaps", "wrong_answers",
                          "max_rss_mib"]))
    write_result("soak", report)
    return report


if __name__ == "__main__":
    command_line(run, __doc__)
