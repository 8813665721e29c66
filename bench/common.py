"""What every benchmark needs: model directories, its command line, result files, tables, other revisions'
code. The load driver is bench.driver (k6)."""

from __future__ import annotations

import argparse
import inspect
import io
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import typing
from collections.abc import Callable
from pathlib import Path

from harness.processes import REPO, SHARED

RESULTS = REPO / "bench" / "results"
CACHE = Path(os.environ.get("BENCH_CACHE", "/tmp/sentiment-bench"))
MINILM_DIR = SHARED / "models" / "sentiment-minilm-sst2"
SENTENCE = "The acting was solid and the story kept me interested until the very end"  # 14 words, 16 tokens
CO_LOCATED_PREDICTOR = ["--threads", "1"]
"""Flags of a predictor sharing its cores with the transformer, Redis and the load generator (as
`make serve` runs it): one forward-pass thread. With two ONNX Runtime threads on 2 shared cores,
each parallel section waits for a thread the scheduler has not run yet: at 818 req/s (5% misses)
a call cost 19 ms of CPU instead of 11 and misses queued for seconds
(docs/decisions/performance-knobs.md)."""


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


def model_dir(model: str) -> Path:
    """`minilm` (the shared real model) or `distilbert` (the production architecture, random weights)."""
    if model == "minilm":
        return MINILM_DIR
    if model == "distilbert":
        return distilbert_dir()
    raise ValueError(f"the model is minilm or distilbert, not {model!r}")


def exported(model: str) -> Path:
    """`python -m predictor.export` of `model_dir(model)` (the calibration set and this CPU's `--runtime auto`
    decision included: what the modelcar holds), redone when the source's fingerprint changes."""
    from predictor.model_dir import DECISIONS_FILE, EXPORT_MANIFEST, fingerprint

    source, out = model_dir(model), CACHE / "exports" / model
    manifest = out / EXPORT_MANIFEST  # written last: an interrupted export has none
    done = manifest.is_file() and (out / DECISIONS_FILE).is_file()  # an in-process export() may lack decisions
    if not done or json.loads(manifest.read_text())["fingerprint"] != fingerprint(source):
        shutil.rmtree(out, ignore_errors=True)
        print(f"exporting {model} ({source}) to {out}", flush=True)
        subprocess.run([sys.executable, "-m", "predictor.export", str(source), "--out", str(out)], cwd=REPO, check=True)
    return out


def sentence_of_tokens(tokens: int) -> str:
    """A sentence of about `tokens` word-piece tokens (specials included)."""
    words = (SENTENCE + " ") * (tokens // 14 + 1)
    return " ".join(words.split()[: max(1, tokens - 2)])


def command_line(run: Callable, doc: str | None, **helps: str) -> None:
    """`python -m bench.X [--flag value ...]` calls `run` with a flag per parameter, defaulting as
    `run` does, so a benchmark's flags cannot drift from what it measures. The default says how a
    flag reads: a bool is a switch, a tuple a comma-separated list of its items' type, a
    `list[str] | None` process flags separated by spaces; a parameter without a default is required."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, param in inspect.signature(run, eval_str=True).parameters.items():
        default, hint = param.default, param.annotation
        # A plain annotation says the value's type, else the default does (none, or None: a string).
        kind = hint if hint in (int, float, str) else str if default in (None, param.empty) else type(default)
        flag: dict = {"help": helps.get(name)}
        if default is param.empty:
            flag.update(required=True, type=kind)
        elif isinstance(default, bool):
            flag.update(action="store_true")
        elif isinstance(default, tuple):
            item = type(default[0])
            flag.update(default=default, type=lambda value, item=item: tuple(item(x) for x in value.split(",") if x))
        elif list[str] in typing.get_args(hint):
            flag.update(default=default, type=str.split)
        else:
            flag.update(default=default, type=kind)
        parser.add_argument(f"--{name}", **flag)
    run(**vars(parser.parse_args()))


def cpu_info() -> dict:
    """The CPU a figure was measured on: results differ between AVX2-only and AVX-512/VNNI machines."""
    from predictor.cpu import read_cpu_flags
    from predictor.gate import cpu_class

    cpuinfo = Path("/proc/cpuinfo")
    name = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text() if cpuinfo.is_file() else "", re.M)
    flags = read_cpu_flags()
    return {"model_name": name.group(1) if name else platform.machine(), "cpus": os.cpu_count(),
            "class": cpu_class(flags), "avx2": "avx2" in flags, "avx512": "avx512f" in flags,
            "avx512_vnni": "avx512_vnni" in flags, "amx_int8": "amx_int8" in flags}


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages: the cores are shared, so say how busy they were."""
    return [round(x, 2) for x in os.getloadavg()]


def git(*args: str, check: bool = False) -> bytes:
    """`git -C <this checkout> ARGS`'s output."""
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, check=check).stdout


def checkout_commit() -> str:
    """The checkout's commit, `+dirty` when its tracked files differ from it: what a figure measured."""
    head = git("rev-parse", "HEAD").decode().strip() or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def write_result(name: str, data: dict) -> Path:
    """bench/results/<name>.json: the figures with when, where (CPU, load), what (command, commit)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpus": os.cpu_count(),
            "machine": platform.processor() or platform.machine(), "cpu": cpu_info(),
            "load_average_at_end": load_average(), "command": _command(),
            "commit": checkout_commit(), **data}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    print(f"-> {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return path


def _command() -> str:
    """The command that is running: `python -m bench.k6_mix --duration 60s`, or the script's."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    # Quoted as a shell needs it: `--predictor_extra "--runtime onnx-int8"` is one argument.
    return shlex.join(["python", *(["-m", spec.name, *sys.argv[1:]] if spec is not None else sys.argv)])


def add_row(rows: list[dict], row: dict, columns: list[str]) -> dict:
    """Append a measured row and print it at once: a run of many minutes shows its progress."""
    rows.append(row)
    print(table([row], columns), flush=True)
    return row


def table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns), "  ".join("-" * widths[c] for c in columns)]
    lines += ["  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 10 else f"{value:.3f}"
    return "" if value is None else str(value)


def export_revision(revision: str) -> tuple[str, Path]:
    """An export of `revision`'s predictor/ and serving/: `PredictorProcess(..., cwd=export)` runs
    that revision's predictor. Always explicit: a default such as "where this branch left main"
    compares main with itself once the branch is merged."""
    if not revision:
        raise ValueError("a baseline needs an explicit git revision")
    commit = git("rev-parse", revision, check=True).decode().strip()
    target = CACHE / f"revision-{commit[:12]}"
    if not (target / "predictor" / "__main__.py").is_file():
        tree = git("ls-tree", "--name-only", commit, check=True).decode().split()
        packages = [p for p in ("predictor", "serving") if p in tree]  # serving/ exists from issue 11 on
        with tarfile.open(fileobj=io.BytesIO(git("archive", commit, *packages, check=True))) as tar:
            tar.extractall(target, filter="data")
    return commit, target
