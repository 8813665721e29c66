"""What every benchmark needs: model directories, result files, load generators, tables."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import time
from pathlib import Path

from tests.processes import REPO, SHARED

RESULTS = REPO / "bench" / "results"
CACHE = Path(os.environ.get("BENCH_CACHE", "/tmp/sentiment-bench"))
MINILM_DIR = SHARED / "models" / "sentiment-minilm-sst2"
SENTENCE = "The acting was solid and the story kept me interested until the very end"  # 14 words, 16 tokens


def distilbert_dir() -> Path:
    """The production architecture (DistilBERT SST-2 config + tokenizer) with random weights."""
    target = CACHE / "distilbert-sst2-random"
    if (target / "model.safetensors").is_file():
        return target
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    source = SHARED / "models" / "distilbert-sst2-tokenizer"
    target.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(source)).save_pretrained(target)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, target / name)
    return target


def sentence_of_tokens(tokens: int) -> str:
    """A sentence of about `tokens` word-piece tokens (specials included)."""
    words = (SENTENCE + " ") * (tokens // 14 + 1)
    return " ".join(words.split()[: max(1, tokens - 2)])


def write_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpus": os.cpu_count(),
            "machine": platform.processor() or platform.machine(), **data}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    print(f"-> {path.relative_to(REPO)}")
    return path


def table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns), "  ".join("-" * widths[c] for c in columns)]
    lines += ["  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 10 else f"{value:.3f}"
    return "" if value is None else str(value)


def hey(url: str, body: str, concurrency: int, seconds: int) -> dict:
    """Run `hey` against `url` with a fixed JSON body; requests/s, latency percentiles (ms), statuses."""
    binary = shutil.which("hey")
    if binary is None:
        raise SystemExit("hey not found: apt-get install -y hey")
    out = subprocess.run([binary, "-z", f"{seconds}s", "-c", str(concurrency), "-m", "POST",
                          "-T", "application/json", "-d", body, url], capture_output=True, text=True,
                         check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = {f"p{m.group(1)}_ms": float(m.group(2)) * 1000
           for m in re.finditer(r"\s(\d+)%+ in ([\d.]+) secs", out)}
    statuses = {m.group(1): int(m.group(2)) for m in re.finditer(r"\[(\d+)\]\s+(\d+) responses", out)}
    error_section = out.split("Error distribution:", 1)[1] if "Error distribution:" in out else ""
    errors = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]", error_section, re.M))
    return {"requests_per_s": rps, **{k: pct[k] for k in ("p50_ms", "p95_ms", "p99_ms") if k in pct},
            "statuses": statuses, "errors": errors, "concurrency": concurrency, "seconds": seconds}
