"""What every benchmark needs: model directories, result files, load generators, tables."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

from harness.processes import REPO, SHARED, PredictorProcess, http_ready

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


def cpu_info() -> dict:
    """The CPU a figure was measured on: results differ between AVX2-only and AVX-512/VNNI machines."""
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "")
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
        flags = set(flags.split(":", 1)[1].split())
    except (OSError, StopIteration):
        flags = set()
    return {"model_name": model or platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "avx2": "avx2" in flags, "avx512": "avx512f" in flags, "avx512_vnni": "avx512_vnni" in flags}


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages: the cores are shared, so say how busy they were."""
    return [round(x, 2) for x in os.getloadavg()]


def write_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpus": os.cpu_count(),
            "machine": platform.processor() or platform.machine(), "cpu": cpu_info(),
            "load_average_at_end": load_average(), **data}
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


class RevisionPredictor(PredictorProcess):
    """The predictor of another git revision, same flags (`python -m predictor` runs from its export)."""

    def __init__(self, source: Path, model_dir: Path, extra: list[str] | None = None):
        super().__init__(model_dir, extra=extra)
        self.source = source

    def start(self, wait: bool = True) -> RevisionPredictor:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.args, cwd=self.source, env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        if wait:
            self.wait_ready(http_ready(f"{self.url}/v2/models/{self.model_name}/ready"), timeout=300)
        return self


def export_revision(revision: str | None) -> tuple[str, Path]:
    """An export of `revision`'s predictor/ and serving/ (default: the merge base of HEAD and main)."""
    command = ["rev-parse", revision] if revision else ["merge-base", "HEAD", "main"]
    commit = subprocess.run(["git", "-C", str(REPO), *command], capture_output=True, text=True,
                            check=True).stdout.strip()
    target = CACHE / f"revision-{commit[:12]}"
    if not (target / "predictor" / "__main__.py").is_file():
        target.mkdir(parents=True, exist_ok=True)
        archive = target / "predictor.tar"
        tree = subprocess.run(["git", "-C", str(REPO), "ls-tree", "--name-only", commit], capture_output=True,
                              text=True, check=True).stdout.split()
        packages = [p for p in ("predictor", "serving") if p in tree]  # serving/ exists from issue 11 on
        subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), commit, *packages], check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
        archive.unlink()
    return commit, target
