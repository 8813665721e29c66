"""This predictor beside NVIDIA Triton: the same model files, the same k6 load, the same CPU, in one run.

    python -m bench.triton --install     # the peer's own venv, .venv-triton (the first run makes it too)
    python -m bench.triton [--seconds 20] [--rounds 3] [--models distilbert minilm] [--clients 32 1]

The peer is PyPI's nvidia-pytriton, which bundles tritonserver, serving `sentiment` with ONNX Runtime fp32
inside its inference callable behind Triton's dynamic batcher (max batch 32, max queue delay 2 ms;
bench/triton_peer.py). It runs in its own venv, so none of its dependencies (numpy < 2, tritonclient,
grpcio) touch the project's.

For each model (DistilBERT with random weights, the production cost; the shared MiniLM), exported once
with `python -m predictor.export SRC --out DIR` (model.onnx, the int8 model, the calibration set and
this CPU class's `--runtime auto` decision), three servers run one at a time: this predictor with
`--runtime onnx` (fp32, the same model.onnx as the peer), with `--runtime auto`, and the peer. Each round
starts every server once, in an order rotated from round to round, warms it up, then runs k6
(bench/k6/mixed.js) at each client count for the same duration: one fresh SST-2 train sentence per v2
request, drawn at random (the `v2-batched` body, shape [1, 1], which both servers take). Before the
first load on a model, both fp32 servers must answer a few dev sentences with probabilities equal within
1e-4. Reported per server: requests/s, p50 and p99 (median of the rounds), their ratios to Triton, and
how much of each forward pass was padding (`sentiment_predictor_pass_tokens_total` on this predictor,
the peer's own count of each Triton batch on its stats port), with the runtime `auto` chose and why; then the
forward passes alone, in-process, at fp32 and int8 in both sides' pass shapes: the compute bound either could reach.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from bench.common import CACHE, MINILM_DIR, RESULTS, distilbert_dir, table, write_result
from bench.driver import k6
from bench.triton_peer import MAX_BATCH_SIZE, MAX_QUEUE_DELAY_US
from harness.clients import metric
from harness.processes import REPO, PredictorProcess, ServerProcess, free_port, http_ready
from harness.sst2 import dev_set, sentences
from predictor.calibration import passes, read_cpu_flags
from predictor.classifier import SentimentClassifier
from predictor.gate import cpu_class
from predictor.model_dir import DECISIONS_FILE, EXPORT_MANIFEST, fingerprint

PEER_VENV = REPO / ".venv-triton"
PEER_PYTHON = PEER_VENV / "bin" / "python"
REQUIREMENTS = REPO / "bench" / "triton-requirements.txt"
MODELS = {"distilbert": distilbert_dir, "minilm": lambda: MINILM_DIR}
FP32, AUTO, PEER = "predictor onnx", "predictor auto", "triton"
SERVERS = (FP32, AUTO, PEER)
BODY = "v2-batched"
SAME_ANSWER = 1e-4
"""Largest probability difference allowed between the two fp32 servers: same model, same engine, same threads."""
GOAL_THROUGHPUT, GOAL_CLIENTS, GOAL_MODEL = 1.5, 32, "distilbert"
"""Issue 22's goal: at least 1.5x Triton's requests/s at 32 clients on DistilBERT, at no worse p99."""
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


# -- plain data: the schedule, the pass counters, the summary -------------------------------------------------------


def schedule(servers: Iterable[str], rounds: int) -> list[tuple[int, str]]:
    """(round, server) in the order they run: each server once a round, the order rotated every round, so no
    server always runs first (right after an export) or last."""
    servers = list(servers)
    return [(r, servers[(r + i) % len(servers)]) for r in range(rounds) for i in range(len(servers))]


def pass_figures(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float | None]:
    """What the forward passes between two counter readings `seconds` apart computed: the share of padding, texts
    per pass, the texts' own tokens per text, and tokens computed per second (padding included: the FLOPs spent)."""
    d = {k: after[k] - before[k] for k in ("text", "padding", "passes", "texts")}
    tokens = d["text"] + d["padding"]
    return {"padding_share": d["padding"] / tokens if tokens else None,
            "texts_per_pass": d["texts"] / d["passes"] if d["passes"] else None,
            "tokens_per_text": d["text"] / d["texts"] if d["texts"] else None,
            "computed_tokens_per_s": tokens / seconds, "passes": d["passes"]}


SUMMARISED = ("requests_per_s", "p50_ms", "p99_ms", "padding_share", "texts_per_pass", "tokens_per_text",
              "computed_tokens_per_s", "gflop_per_s")


def summarise(rows: list[dict], peer: str = PEER) -> list[dict]:
    """Per model, clients and server: the median of its rounds, and its throughput and p99 as ratios to `peer`'s."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["clients"], row["server"]), []).append(row)
    summary = []
    for (model, clients, server), runs in groups.items():
        entry = {"model": model, "clients": clients, "server": server, "rounds": len(runs)}
        for key in SUMMARISED:
            values = [r[key] for r in runs if r.get(key) is not None]
            entry[key] = statistics.median(values) if values else None
        summary.append(entry)
    for entry in summary:
        base = next((e for e in summary if (e["model"], e["clients"], e["server"]) ==
                     (entry["model"], entry["clients"], peer)), None)
        entry["throughput_vs_peer"] = entry["requests_per_s"] / base["requests_per_s"] if base else None
        entry["p99_vs_peer"] = entry["p99_ms"] / base["p99_ms"] if base else None
    return summary


def goal(summary: list[dict], peer: str = PEER) -> dict[str, dict]:
    """Per server of ours: is it at least GOAL_THROUGHPUT x the peer at GOAL_CLIENTS on GOAL_MODEL, at no worse p99?"""
    return {e["server"]: {"throughput_vs_peer": e["throughput_vs_peer"], "p99_vs_peer": e["p99_vs_peer"],
                          "met": e["throughput_vs_peer"] >= GOAL_THROUGHPUT and e["p99_vs_peer"] <= 1.0}
            for e in summary if (e["model"], e["clients"]) == (GOAL_MODEL, GOAL_CLIENTS) and e["server"] != peer
            and e["throughput_vs_peer"] is not None}


def gflop_per_token(config: dict) -> float:
    """An encoder's matrix-multiply work per token, in GFLOP: per layer, the Q, K, V and output projections (4 h²)
    and the feed-forward pair (2 h f), 2 FLOP per multiply-add. Attention's scores add 4 h per token per token of
    context, under 2% at SST-2's lengths, and are left out (DistilBERT: 1.36 GFLOP a 16-token text, with them 1.37)."""
    hidden = config.get("hidden_size") or config["dim"]
    ffn = config.get("intermediate_size") or config["hidden_dim"]
    layers = config.get("num_hidden_layers") or config["n_layers"]
    return 2 * layers * (4 * hidden * hidden + 2 * hidden * ffn) / 1e9


def runtime_labels(metrics_text: str) -> dict[str, str]:
    """The labels of the `sentiment_predictor_runtime_info` series set to 1: the runtime served, and why."""
    for line in metrics_text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample.startswith("sentiment_predictor_runtime_info{") and float(value) == 1:
            return dict(re.findall(r'(\w+)="([^"]*)"', sample))
    return {}


# -- processes --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    url: str


class TritonPeerProcess(ServerProcess):
    """bench/triton_peer.py run by the peer's venv on free ports; its pass counters on `stats`."""

    def __init__(self, model_dir: Path):
        self.http_port, self.grpc_port, self.metrics_port, self.stats_port = (free_port() for _ in range(4))
        ports = {"http_port": self.http_port, "grpc_port": self.grpc_port, "metrics_port": self.metrics_port,
                 "stats_port": self.stats_port}
        args = [str(PEER_PYTHON), "-m", "bench.triton_peer", str(model_dir),
                *(a for name, port in ports.items() for a in (f"--{name}", str(port)))]
        super().__init__(f"triton-peer-{self.http_port}", args, env={"PYTHONPATH": str(REPO)})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def stats(self) -> Endpoint:
        return Endpoint(f"http://127.0.0.1:{self.stats_port}")

    def start(self) -> TritonPeerProcess:
        super().start()
        self.wait_ready(http_ready(f"{self.url}/v2/models/sentiment/ready"), timeout=300)
        return self


def start(name: str, model_dir: Path) -> ServerProcess:
    if name == PEER:
        return TritonPeerProcess(model_dir).start()
    return PredictorProcess(model_dir, extra=["--runtime", "onnx" if name == FP32 else "auto"]).start()


COUNTERS = {
    PEER: {"text": 'triton_peer_pass_tokens_total{kind="text"}',
           "padding": 'triton_peer_pass_tokens_total{kind="padding"}',
           "passes": "triton_peer_passes_total", "texts": "triton_peer_pass_texts_total"},
    "predictor": {"text": 'sentiment_predictor_pass_tokens_total{kind="text"}',
                  "padding": 'sentiment_predictor_pass_tokens_total{kind="padding"}',
                  "passes": "sentiment_predictor_batch_texts_count", "texts": "sentiment_predictor_batch_texts_sum"},
}


def counters(name: str, server: ServerProcess) -> dict[str, float]:
    where, names = (server.stats, COUNTERS[PEER]) if name == PEER else (server, COUNTERS["predictor"])
    return {key: metric(where, sample) for key, sample in names.items()}


def v2_body(text: str) -> dict:
    """bench/k6/mixed.js's `v2-batched` body: one text of shape [1, 1]."""
    return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": [text]}]}


def probabilities(server: ServerProcess, texts: list[str]) -> np.ndarray:
    """The server's probabilities for each text, one request each."""
    rows = []
    with httpx.Client(timeout=60) as client:
        for text in texts:
            r = client.post(f"{server.url}/v2/models/sentiment/infer", json=v2_body(text))
            r.raise_for_status()
            out = next(o for o in r.json()["outputs"] if o["name"] == "probabilities")
            rows.append(np.asarray(out["data"], dtype=np.float64).reshape(out["shape"])[0])
    return np.stack(rows)


def runtime_choice(server: PredictorProcess, model_dir: Path) -> dict:
    """What `--runtime auto` serves and why: the metric's labels, the v2 metadata's platform, the start-up log line
    and the figures the export recorded."""
    labels = runtime_labels(httpx.get(f"{server.url}/metrics", timeout=10).text)
    platform = httpx.get(f"{server.url}/v2/models/sentiment", timeout=10).json().get("platform")
    logged = next((line for line in server.log().splitlines() if "(--runtime auto" in line), None)
    recorded = json.loads((model_dir / DECISIONS_FILE).read_text())["decisions"].get(labels.get("cpu_class"), {})
    return {**labels, "platform": platform, "log": logged, "detail": recorded.get("detail"),
            "candidates": recorded.get("candidates")}


# -- the model exports and the peer's venv ------------------------------------------------------------------------


def exported(model: str) -> Path:
    """`python -m predictor.export SRC --out DIR` once per source fingerprint (DIR under the bench cache)."""
    source = MODELS[model]()
    out = CACHE / f"triton-export-{model}"
    source_hash = fingerprint(source)
    manifest = out / EXPORT_MANIFEST
    if manifest.is_file() and json.loads(manifest.read_text())["fingerprint"] == source_hash:
        return out
    shutil.rmtree(out, ignore_errors=True)
    print(f"exporting {model} ({source}) to {out}", flush=True)
    subprocess.run([sys.executable, "-m", "predictor.export", str(source), "--out", str(out)], cwd=REPO, check=True)
    return out


def install(venv: Path = PEER_VENV) -> dict:
    """The peer's venv from this interpreter's base python, with the pinned requirements; its size and time."""
    base = getattr(sys, "_base_executable", sys.executable)
    start_time = time.monotonic()
    subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-r", str(REQUIREMENTS)], check=True)
    seconds = time.monotonic() - start_time
    versions = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; print({p: m.version(p) for p in "
         "('nvidia-pytriton', 'onnxruntime', 'tokenizers', 'numpy')})"],
        capture_output=True, text=True, check=True).stdout.strip()
    site = next((venv / "lib").glob("python3*/site-packages"))
    largest = sorted(((p.name, _bytes(p)) for p in site.iterdir()), key=lambda item: -item[1])[:6]
    result = {"venv": str(venv), "seconds": round(seconds, 1), "bytes": _bytes(venv),
              "largest": {name: size for name, size in largest}, "versions": versions,
              "pip_cache": "as found (a warm cache skips the download)"}
    print(f"{venv}: {result['bytes'] / 1e6:,.0f} MB in {seconds:.0f} s; largest: "
          + ", ".join(f"{name} {size / 1e6:,.0f} MB" for name, size in largest))
    write_result("triton_install", result)
    return result


def _pins() -> list[str]:
    return [line for line in REQUIREMENTS.read_text().splitlines() if line and not line.startswith("#")]


def _bytes(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    return sum(f.lstat().st_size for f in path.rglob("*") if f.is_file() or f.is_symlink())


# -- the run ----------------------------------------------------------------------------------------------------------


def run(models: list[str], clients: list[int], rounds: int, seconds: int) -> dict:
    if not PEER_PYTHON.is_file():  # one command: the first run makes the peer's venv
        install()
    rows, choices, answer_diffs, raw = [], {}, {}, []
    for model in models:
        model_rows, choices[model], answer_diffs[model] = run_model(model, clients, rounds, seconds)
        rows += model_rows
        raw += raw_bound(model, sentences("train.tsv", 5000))
    summary = summarise(rows)
    reached = goal(summary)
    flags = read_cpu_flags()
    cpu = {"class": cpu_class(flags), "flags": {f: f in flags for f in CPU_FLAGS}}
    print(table(summary, ["model", "clients", "server", "requests_per_s", "p50_ms", "p99_ms", "throughput_vs_peer",
                          "p99_vs_peer", "padding_share", "texts_per_pass", "gflop_per_s"]))
    print(table(raw, ["model", "runtime", "shape", "texts_per_s", "computed_tokens_per_s", "gflop_per_s",
                      "padding_share"]))
    for model, choice in choices.items():
        print(f"{model}: --runtime auto chose {choice.get('runtime')} ({choice.get('reason')}, "
              f"{choice.get('source')}, CPU class {choice.get('cpu_class')}): {choice.get('detail')}")
    print(f"goal (>= {GOAL_THROUGHPUT}x Triton at {GOAL_CLIENTS} clients on {GOAL_MODEL}, p99 no worse): "
          + json.dumps(reached))
    install_file = RESULTS / "triton_install.json"
    write_result("triton", {
        "peer": {"server": "nvidia-pytriton (tritonserver bundled), ONNX Runtime fp32 in a @batch callable",
                 "max_batch_size": MAX_BATCH_SIZE, "max_queue_delay_us": MAX_QUEUE_DELAY_US, "instances": 1,
                 "requirements": _pins()},
        "load": {"scenario": "bench/k6/mixed.js", "body": BODY, "texts": "SST-2 train, first 5000, drawn at random, "
                 "each made unique (k6's cold path)", "seconds": seconds, "rounds": rounds, "clients": clients},
        "cpu_features": cpu, "auto": choices, "fp32_answer_max_diff": answer_diffs, "goal": reached,
        "summary": summary, "rows": rows, "raw_forward_passes": raw,
        "install": json.loads(install_file.read_text()) if install_file.is_file() else None,
    })
    return {"summary": summary, "goal": reached, "auto": choices}


def run_model(model: str, clients: list[int], rounds: int, seconds: int,
              warmup_seconds: int = 3) -> tuple[list[dict], dict, dict[str, float]]:
    """Every server's rounds on one model: the rows, what `auto` chose, and how far each answered from the peer."""
    model_dir = exported(model)
    flops = gflop_per_token(json.loads((model_dir / "config.json").read_text()))
    load, check_texts = sentences("train.tsv", 5000), dev_set()[0][:8]
    rows, choice, answers, diffs = [], {}, {}, {}
    for round_, name in schedule(SERVERS, rounds):
        server = start(name, model_dir)
        try:
            if round_ == 0:
                answers[name] = probabilities(server, check_texts)
                if name == AUTO:
                    choice = runtime_choice(server, model_dir)
                if len(answers) == len(SERVERS):
                    diffs = same_answers(model, answers)
            url = f"{server.url}/v2/models/sentiment/infer"
            k6(url, [], load[:200], f"{warmup_seconds}s", hit_ratio=0.0, vus=8, body=BODY)
            for c in clients:
                before = counters(name, server)
                result = k6(url, [], load, f"{seconds}s", hit_ratio=0.0, vus=c, body=BODY)
                figures = pass_figures(before, counters(name, server), seconds)
                rows.append({"model": model, "server": name, "round": round_, "clients": c, **result, **figures,
                             "gflop_per_s": figures["computed_tokens_per_s"] * flops})
                print(table(rows[-1:], ["model", "server", "round", "clients", "requests_per_s", "p50_ms", "p99_ms",
                                        "failed_requests", "padding_share", "texts_per_pass"]), flush=True)
        finally:
            server.stop()
    return rows, choice, diffs


RAW_TEXTS = 256


def raw_bound(model: str, texts: list[str]) -> list[dict]:
    """The compute bound, served by nothing: the forward passes alone, in-process, at each precision, on load texts
    made unique as k6 makes them, in the predictor's pass shapes (at most 32 texts and 512 padded tokens) and in
    Triton's (32 texts, each batch padded to its longest)."""
    texts = [f"{text} ({i % 32 + 1}-{i})" for i, text in enumerate(texts[:RAW_TEXTS])]
    flops = gflop_per_token(json.loads((exported(model) / "config.json").read_text()))
    rows = []
    for runtime in ("onnx", "onnx-int8"):
        classifier = SentimentClassifier(exported(model), runtime=runtime)
        encoded = classifier.encode(texts)
        shapes = {"predictor passes": passes(classifier, texts),
                  "32 texts a pass": [encoded[i:i + 32] for i in range(0, len(encoded), 32)]}
        for shape, batches in shapes.items():
            classifier.predict_encoded(batches[0])  # warm-up
            start = time.perf_counter()
            for batch in batches:
                classifier.predict_encoded(batch)
            seconds = time.perf_counter() - start
            text = sum(len(e.ids) for batch in batches for e in batch)
            computed = sum(len(batch) * max(len(e.ids) for e in batch) for batch in batches)
            rows.append({"model": model, "runtime": runtime, "shape": shape, "texts_per_s": len(texts) / seconds,
                         "computed_tokens_per_s": computed / seconds, "gflop_per_s": computed / seconds * flops,
                         "padding_share": 1 - text / computed})
            print(table(rows[-1:], list(rows[-1])), flush=True)
    return rows


def same_answers(model: str, answers: dict[str, np.ndarray]) -> dict[str, float]:
    """Each server's largest probability difference from the peer's; the fp32 one must stay within SAME_ANSWER."""
    diffs = {name: float(np.abs(probs - answers[PEER]).max()) for name, probs in answers.items() if name != PEER}
    print(f"{model}: largest probability difference from Triton's on the check sentences: {diffs}", flush=True)
    if diffs[FP32] > SAME_ANSWER:
        raise SystemExit(f"{model}: the fp32 predictor and Triton answer differently ({diffs[FP32]:.2e} > "
                         f"{SAME_ANSWER}): the comparison would not be of the same computation")
    return diffs


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.triton", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--install", action="store_true", help=f"(re)create {PEER_VENV.name} and stop")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--clients", nargs="+", type=int, default=[32, 1])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=20, help="k6 duration per server, round and client count")
    args = parser.parse_args()
    if args.install:
        install()
    else:
        run(args.models, args.clients, args.rounds, args.seconds)


if __name__ == "__main__":
    main()
