"""This predictor (`--runtime onnx`, fp32, and `--runtime auto`) beside NVIDIA Triton serving the same export
(bench/triton_peer.py, in its own venv so that none of its pins touch the project's), under one k6 load on
one CPU, with bench.served's engine.

    python -m bench.triton --install     # the peer's own venv, .venv-triton (the first run makes it too)
    python -m bench.triton [--seconds 20] [--rounds 3] [--models distilbert,minilm] [--clients 32,1]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np

from bench.common import command_line, exported, table, write_result
from bench.served import side_by_side, summarise
from bench.triton_peer import MAX_BATCH_SIZE, MAX_QUEUE_DELAY_US
from harness.processes import REPO, PredictorProcess, ServerProcess, free_port, http_ready
from harness.sst2 import dev_set, sentences
from predictor.model_dir import DECISIONS_FILE

PEER_VENV = REPO / ".venv-triton"
REQUIREMENTS = REPO / "bench" / "triton-requirements.txt"
FP32, AUTO, PEER = "predictor onnx", "predictor auto", "triton"
SAME_ANSWER = 1e-4
"""Largest probability difference allowed between the two fp32 servers: same model, same engine, same threads."""
GOAL_THROUGHPUT, GOAL_CONCURRENCY, GOAL_MODEL = 1.5, 32, "distilbert"
"""Issue 22's goal: at least 1.5x Triton's requests/s at 32 clients on DistilBERT, at no worse p99."""


def goal(summary: list[dict]) -> dict[str, dict]:
    """Per server of ours: its ratios to the peer at GOAL_CONCURRENCY clients on GOAL_MODEL, and if they meet it."""
    return {e["server"]: {"throughput_vs_peer": e["throughput_vs_reference"], "p99_vs_peer": e["p99_vs_reference"],
                          "met": e["throughput_vs_reference"] >= GOAL_THROUGHPUT and e["p99_vs_reference"] <= 1.0}
            for e in summary if (e["model"], e["concurrency"]) == (GOAL_MODEL, GOAL_CONCURRENCY)
            and e["server"] != PEER and e["throughput_vs_reference"] is not None}


class TritonPeerProcess(ServerProcess):
    """bench/triton_peer.py run by the peer's venv on free ports; its pass counters on `pass_metrics`."""

    def __init__(self, model_dir: Path):
        ports = {name: free_port() for name in ("http_port", "grpc_port", "metrics_port", "stats_port")}
        self.url = f"http://127.0.0.1:{ports['http_port']}"
        self.pass_metrics = SimpleNamespace(url=f"http://127.0.0.1:{ports['stats_port']}")  # as metric() reads
        args = [str(PEER_VENV / "bin" / "python"), "-m", "bench.triton_peer", str(model_dir),
                *(a for name, port in ports.items() for a in (f"--{name}", str(port)))]
        super().__init__(f"triton-peer-{ports['http_port']}", args, env={"PYTHONPATH": str(REPO)})

    def start(self) -> TritonPeerProcess:
        return super().start().wait_ready(http_ready(f"{self.url}/v2/models/sentiment/ready"), timeout=300)


def probabilities(server: ServerProcess, texts: list[str]) -> np.ndarray:
    """The server's probabilities for each text, one `v2-batched` request each."""
    rows = []
    with httpx.Client(timeout=60) as client:
        for text in texts:
            body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": [text]}]}
            r = client.post(f"{server.url}/v2/models/sentiment/infer", json=body)
            r.raise_for_status()
            out = next(o for o in r.json()["outputs"] if o["name"] == "probabilities")
            rows.append(np.asarray(out["data"], dtype=np.float64).reshape(out["shape"])[0])
    return np.stack(rows)


def same_answers(model: str, answers: dict[str, np.ndarray]) -> dict[str, float]:
    """Each server's largest probability difference from the peer's; the fp32 one must stay within SAME_ANSWER."""
    diffs = {name: float(np.abs(probs - answers[PEER]).max()) for name, probs in answers.items() if name != PEER}
    print(f"{model}: largest probability difference from Triton's on the check sentences: {diffs}", flush=True)
    if diffs[FP32] > SAME_ANSWER:
        raise SystemExit(f"{model}: the fp32 predictor and Triton answer differently ({diffs[FP32]:.2e} > "
                         f"{SAME_ANSWER}): the comparison would not be of the same computation")
    return diffs


def install_peer(venv: Path = PEER_VENV) -> None:
    """The peer's venv from this interpreter's base python, with the pinned requirements; its time and size."""
    began = time.monotonic()
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-r", str(REQUIREMENTS)], check=True)
    size = sum(f.lstat().st_size for f in venv.rglob("*") if f.is_file() or f.is_symlink())
    print(f"{venv}: {size / 1e6:,.0f} MB in {time.monotonic() - began:.0f} s (pip's cache as found)")


def run_model(model: str, load: dict, clients: tuple[int, ...], rounds: int, seconds: int) -> tuple[list, dict, dict]:
    """The three servers' rows on one model, what `auto` chose, and how far each answered from the peer."""
    directory, answers, choice, diffs = exported(model), {}, {}, {}

    def first(name: str, server: ServerProcess) -> None:  # the first round, before the server's load
        answers[name] = probabilities(server, dev_set()[0][:8])
        if name == AUTO:  # what it serves and why (the v2 metadata's `platform`), and the export's figures behind it
            choice["platform"] = httpx.get(f"{server.url}/v2/models/sentiment", timeout=10).json()["platform"]
            choice["decisions"] = json.loads((directory / DECISIONS_FILE).read_text())["decisions"]
        if len(answers) == 3:
            diffs.update(same_answers(model, answers))

    servers = {FP32: lambda: PredictorProcess(directory, extra=["--runtime", "onnx"]).start(),
               AUTO: lambda: PredictorProcess(directory, extra=["--runtime", "auto"]).start(),
               PEER: lambda: TritonPeerProcess(directory).start()}
    return side_by_side(servers, "/v2/models/sentiment/infer", load, clients, seconds, rounds, first, model=model), \
        choice, diffs


def run(models=("distilbert", "minilm"), clients=(32, 1), rounds: int = 3, seconds: int = 20,
        install: bool = False) -> dict:
    if install or not (PEER_VENV / "bin" / "python").is_file():  # one command: the first run installs
        install_peer()
        if install:
            return {}
    load = {"hot": [], "cold": sentences("train.tsv", 5000), "hit_ratio": 0.0, "body": "v2-batched"}  # each made unique
    rows, choices, diffs = [], {}, {}
    for model in models:
        model_rows, choices[model], diffs[model] = run_model(model, load, clients, rounds, seconds)
        rows += model_rows
    summary = summarise(rows, reference=PEER, by=("model", "concurrency"))
    reached = goal(summary)
    print(table(summary, ["model", "concurrency", "server", "requests_per_s", "p50_ms", "p99_ms",
                          "throughput_vs_reference", "p99_vs_reference", "padding_share", "texts_per_pass"]))
    for model, choice in choices.items():
        print(f"{model}: --runtime auto serves {choice['platform']}")
    print(f"goal (>= {GOAL_THROUGHPUT}x Triton at {GOAL_CONCURRENCY} clients on {GOAL_MODEL}, p99 no worse): "
          + json.dumps(reached))
    write_result("triton", {
        "peer": {"max_batch_size": MAX_BATCH_SIZE, "max_queue_delay_us": MAX_QUEUE_DELAY_US,
                 "requirements": REQUIREMENTS.name},
        "auto": choices, "fp32_answer_max_diff": diffs, "goal": reached, "summary": summary, "rows": rows,
    })
    return {"summary": summary, "goal": reached, "auto": choices}


if __name__ == "__main__":
    command_line(run, __doc__, install="(re)create the peer's venv, .venv-triton, and stop")
