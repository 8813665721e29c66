"""The figures the README quotes, each read from one published results file, so text cannot drift: a figure
names its file and where its value sits in it. `python -m bench.plots --out docs/bench --readme README.md`
publishes the files and rewrites the README's block between `BEGIN` and `END` from them; the tests check
that the block is what the published files render, and that the Performance section quotes none again.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

from harness.processes import REPO

PUBLISHED = REPO / "docs" / "bench"
BEGIN = "<!-- figures: rendered by `python -m bench.plots --out docs/bench --readme README.md`; do not edit -->"
END = "<!-- /figures -->"


@dataclass(frozen=True)
class Figure:
    """One quoted figure: `path` walks the results file (a key, or `{field: value}` to pick a row)."""

    name: str
    file: str
    path: tuple[str | dict, ...]
    unit: str = ""
    digits: int = 0
    scale: float = 1
    """What the stored value is multiplied by to be shown (bytes to MB, a share to a percentage)."""

    def value(self, data: dict) -> float:
        node = data
        try:
            for step in self.path:
                if isinstance(step, dict):
                    node = next(row for row in node if all(row.get(k) == v for k, v in step.items()))
                else:
                    node = node[step]
        except (KeyError, StopIteration, TypeError):  # a partial run must not be published as the README's
            raise KeyError(f"{self.file} has no {self.path} ({self.name})") from None
        return float(node) * self.scale

    def shown(self, data: dict) -> str:
        return f"{self.value(data):,.{self.digits}f}{self.unit}"


K6, INT8, SERVED = "k6_mixed.json", "k6_mixed_onnx_int8.json", "served_distilbert_onnx.json"


def _summary(name: str, file: str, key: str, unit: str = " ms", digits: int = 0) -> Figure:
    return Figure(name, file, ("summary", key), unit, digits)


FIGURES = (
    _summary("k6, 10 VUs, 95% hits: this stack", K6, "this_stack_requests_per_s", " req/s"),
    _summary("k6, 10 VUs, 95% hits: this stack, p99", K6, "this_stack_p99_ms"),
    _summary("k6, 10 VUs, 95% hits: the original app as written", K6, "original_app_as_written_requests_per_s",
             " req/s", 1),
    _summary("this stack vs the original app as written", K6, "x_original_app_as_written_requests_per_s", "x", 1),
    _summary("k6, 10 VUs, 95% hits: the original app, cache working", K6, "original_app_working_requests_per_s",
             " req/s"),
    _summary("this stack vs the original app, cache working", K6, "x_original_app_working_requests_per_s", "x", 1),
    _summary("fixed 818 req/s (`onnx`): p99", K6, "fixed_rate_p99_ms"),
    _summary("fixed 818 req/s (`onnx`): hits p99", K6, "fixed_rate_hit_p99_ms"),
    _summary("fixed 818 req/s (`onnx`): misses p50", K6, "fixed_rate_miss_p50_ms"),
    _summary("fixed 818 req/s (`onnx`): misses p99", K6, "fixed_rate_miss_p99_ms"),
    _summary("fixed 818 req/s (`onnx`): dropped iterations", K6, "fixed_rate_dropped_iterations", ""),
    _summary("fixed 818 req/s (`onnx-int8`): p99", INT8, "fixed_rate_p99_ms"),
    _summary("fixed 818 req/s (`onnx-int8`): misses p99", INT8, "fixed_rate_miss_p99_ms"),
    _summary("fixed 818 req/s (`onnx`): predictor CPU per miss", K6, "fixed_rate_predictor_cpu_ms_per_call", " ms", 1),
    _summary("fixed 818 req/s (`onnx`): transformer CPU per request", K6, "fixed_rate_transformer_cpu_ms_per_request",
             " ms", 1),
    *(Figure(f"cache hits, `{route}`", "cache_hit.json", ("rows", {"cache": "near cache", "route": route},
                                                            "requests_per_s"), " req/s")
      for route in ("/v1/models/sentiment:predict", "/bulk-predict")),
    Figure("served DistilBERT `onnx`, batching, 32 clients", SERVED,
           ("rows", {"server": "batching", "concurrency": 32}, "requests_per_s"), " req/s"),
    _summary("batching vs raw offline batch 32 (`onnx`, 32 clients)", SERVED, "served_32_vs_raw_batch32", "x", 2),
    _summary("batching vs the same runtime without batching (`onnx`, 32 clients)", SERVED,
             "served_32_vs_no_batching_same_runtime_32", "x", 1),
    _summary("batching vs naive torch per request (`onnx`, 32 clients)", SERVED, "served_32_vs_naive_torch_32", "x", 1),
    _summary("batching vs naive torch per request (`onnx-int8`, 32 clients)", "served_distilbert_onnx-int8.json",
             "served_32_vs_naive_torch_32", "x", 1),
    *(Figure(f"SST-2 dev accuracy, MiniLM `{runtime}`", "accuracy.json", ("rows", {"runtime": runtime}, "accuracy"),
             "", 3) for runtime in ("onnx", "onnx-int8", "torch-int8")),
    *(Figure(f"SST-2 dev accuracy through a served predictor, MiniLM `--runtime {runtime}`", "accuracy.json",
             ("served", {"runtime": runtime}, "accuracy"), "", 3) for runtime in ("onnx", "auto")),
    Figure("`onnx-int8` top label as torch's, SST-2 dev", "accuracy.json",
           ("rows", {"runtime": "onnx-int8"}, "label_agreement_with_torch"), "%", 1, 100),
    *(Figure(f"`auto` gate, {where}, `onnx-int8` vs fp32: {what}", "accuracy.json",
             ("gate", {"set": rows, "runtime": "onnx-int8"}, key), unit, digits, scale)
      for where, rows in (("calibration set", "calibration (1,000 SST-2 train)"), ("SST-2 dev", "SST-2 dev (872)"))
      for what, key, unit, digits, scale in (("top-label agreement", "agreement", "%", 1, 100),
                                             ("mean abs probability difference", "mean_abs_diff", "", 3, 1))),
    *(Figure(f"raw DistilBERT `{runtime}`, 16 tokens, batch {batch}", file,
             ("summary", "raw_seq_per_s", runtime, f"batch_{batch}"), " seq/s")
      for runtime, file in (("torch", SERVED), ("onnx", SERVED), ("onnx-int8", "served_distilbert_onnx-int8.json"))
      for batch in (1, 32)),
    *(Figure(f"cold start, {image} predictor, {model}: exec to first answer", "cold_start.json",
             ("rows", {"image": image, "model": model}, "first_answer_s"), " s", 2)
      for image, model in (("torch-free", "minilm"), ("torch-free", "distilbert"), ("torch", "minilm"))),
    Figure("cold start, transformer: exec to first answer from Redis, predictor at zero", "cold_start.json",
           ("rows", {"image": "transformer"}, "first_answer_s"), " s", 2),
    *(Figure(f"image `{image}`", "cold_start.json", ("image_bytes", f"{image}:0.1.0"), " MB", 0, 1e-6)
      for image in ("sentiment-predictor", "sentiment-predictor-torch", "sentiment-transformer")),
    *(Figure(f"DistilBERT, 32 clients, one SST-2 sentence per v2 request, {name}: {what}", "triton.json",
             ("summary", {"model": "distilbert", "concurrency": 32, "server": server}, key), unit, digits, scale)
      for server, name in (("triton", "NVIDIA Triton (fp32, dynamic batcher)"),
                           ("predictor onnx", "this predictor `onnx`"), ("predictor auto", "this predictor `auto`"))
      for what, key, unit, digits, scale in (("throughput", "requests_per_s", " req/s", 1, 1),
                                             ("p99", "p99_ms", " ms", 0, 1),
                                             ("padding share of its passes", "padding_share", "%", 0, 100))),
    *(Figure(f"this predictor `{runtime}` vs Triton, DistilBERT, 32 clients: {what}", "triton.json",
             ("goal", f"predictor {runtime}", key), "x", 2)
      for runtime in ("onnx", "auto") for what, key in (("throughput", "throughput_vs_peer"), ("p99", "p99_vs_peer"))),
    *(_summary(f"a one-text request beside a maximum-size one, {name}: {which}", "fairness.json",
               f"{model}_{server}_short_beside_large_s", " s", 2)
      for model, name in (("minilm", "MiniLM"), ("distilbert", "DistilBERT"))
      for server, which in (("after", "answered in"), ("before", "without token budgets"))),
    *(_summary(f"short requests' p99 beside 10% long ones over their p99 alone, MiniLM{which}", "fairness.json",
               f"minilm_{server}_mixed_short_p99_ratio", "x", 2)
      for server, which in (("after", ""), ("before", ", without token budgets"))),
    *(Figure(f"cache hits through {where}{what}", "cache_hit.json", ("rows", {"cache": cache}, key), unit, digits)
      for what, key, unit, digits in (("", "requests_per_s", " req/s", 0), (": p99", "p99_ms", " ms", 1))
      for where, cache in (("a 3-master Redis Cluster", "3-master Redis Cluster"),
                           ("one Redis node", "one Redis node"))),
    Figure("soak under faults: requests", "soak.json", ("requests",)),
    Figure("soak under faults: 5xx answers", "soak.json", ("5xx",)),
    Figure("soak under faults: wrong answers", "soak.json", ("wrong_answers",)),
    *(Figure(f"soak under faults: {process}'s largest RSS", "soak.json", ("max_rss_mib", process), " MiB")
      for process in ("predictor", "transformer", "redis")),
)
FILES = tuple(dict.fromkeys(f.file for f in FIGURES))
"""The results files the figures are read from, in the figures' order."""


def measured(data: dict) -> str:
    """When, at which commit, on what CPU and how busy, by which command: what makes a figure comparable."""
    cpu = data.get("cpu", {})
    isa = "AVX-512" if cpu.get("avx512") else "AVX2" if cpu.get("avx2") else "no AVX2"
    load = data.get("load_average_at_end", ["?"])[0]
    commit = str(data.get("commit", "?"))
    commit = commit[:9] + ("+dirty" if commit.endswith("+dirty") else "")  # uncommitted code measured: say so
    return (f"{data.get('when', '?')}, `{commit}`, {data.get('cpus', '?')} CPUs "
            f"{cpu.get('model_name', '?')} ({isa}), load {load}: `{data.get('command', '?')}`")


def published_files(published: Path = PUBLISHED) -> dict[str, dict]:
    """The results files the figures name that are in `published`, by name, in the figures' order."""
    return {name: json.loads((published / name).read_text()) for name in FILES if (published / name).is_file()}


def render(published: Path = PUBLISHED) -> str:
    """The README's figures block: a row per published figure, how each file was measured, and the
    results files not published yet."""
    data = published_files(published)
    lines = [BEGIN]
    if data:
        lines += ["| figure | value | results file |", "| --- | --- | --- |"]
        lines += [f"| {f.name} | {f.shown(data[f.file])} | `{f.file}` |" for f in FIGURES if f.file in data]
        lines += ["", *(f"- `{name}`: {measured(data[name])}" for name in FILES if name in data)]
    missing = [name for name in FILES if name not in data]
    if missing:
        lines += ["", *textwrap.wrap("Not published yet: " + ", ".join(f"`{name}`" for name in missing) + ".", 100)]
    return "\n".join([*lines, END])


def block(readme: str) -> str:
    """The figures block as the README has it."""
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    return readme[start:end]


def write_readme(readme: Path, published: Path = PUBLISHED) -> None:
    text = readme.read_text()
    readme.write_text(text.replace(block(text), render(published)))
    print(f"-> {readme.name}: figures from {published}")
