"""Pictures of the benchmark results: PNGs beside bench/results/*.json and a REPORT.md linking them.

Renders from the JSON files that exist, without running anything (`make bench` calls it last):

    python -m bench.plots [--results bench/results] [--out DIR] [--readme README.md]

Each plot comes from one result file; the report names the file, when, where and how it was
measured. With `--out`, each result file rendered is copied beside its plots (publishing it:
docs/bench/ is what the README quotes); `--readme` rewrites the README's figures block
(bench.figures) from the result files in the output folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers and CI

import matplotlib.pyplot as plt

from bench import figures
from bench.common import RESULTS

LATENCIES = ("p50_ms", "p95_ms", "p99_ms")


def served(data: dict, title: str) -> plt.Figure:
    """Throughput and p50/p99 latency vs concurrency, one line per server (batching, no batching, naive)."""
    fig, (rps, latency) = plt.subplots(1, 2, figsize=(11, 4.2))
    servers = list(dict.fromkeys(r["server"] for r in data["rows"]))
    for i, server in enumerate(servers):
        rows = sorted((r for r in data["rows"] if r["server"] == server), key=lambda r: r["concurrency"])
        clients = [r["concurrency"] for r in rows]
        color = f"C{i}"
        rps.plot(clients, [r["requests_per_s"] for r in rows], "o-", color=color, label=server)
        latency.plot(clients, [r["p50_ms"] for r in rows], "o-", color=color, label=f"{server} p50")
        latency.plot(clients, [r["p99_ms"] for r in rows], "s--", color=color, label=f"{server} p99")
    raw = data.get("summary", {}).get("raw_batch32_seq_per_s")
    if raw:
        rps.axhline(raw, color="grey", linestyle=":", label="raw offline, batch 32")
    rps.set(title="Throughput", xlabel="concurrent clients", ylabel="requests/s", xscale="log", ylim=(0, None))
    latency.set(title="Latency", xlabel="concurrent clients", ylabel="ms", xscale="log", yscale="log")
    for ax in (rps, latency):
        clients = sorted({r["concurrency"] for r in data["rows"]})
        ax.set_xticks(clients, [str(c) for c in clients])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return fig


def k6_series(data: dict) -> dict[str, dict]:
    """Every run a k6 result holds, by name: `result` (this stack), entries of lists such as `series`
    or `rows` (named by their `target` or `route`), and any other object with a throughput, such as
    the original's figures."""
    series = {}
    for key, value in data.items():
        runs = value if isinstance(value, list) else [value]
        for i, run in enumerate(runs):
            if isinstance(run, dict) and "requests_per_s" in run:
                name = "this stack" if key == "result" else key.replace("_", " ")
                if isinstance(value, list):
                    name = run.get("target") or run.get("route") or run.get("name") or f"{name} {i + 1}"
                series[name] = run
    return series


def k6_runs(data: dict, title: str) -> plt.Figure:
    """Requests/s and latency percentiles of each run the k6 result holds, side by side."""
    series = k6_series(data)
    if not series:
        raise KeyError("requests_per_s")
    fig, (rps, latency) = plt.subplots(1, 2, figsize=(max(11, 3 + 2.2 * len(series)), 4.6))
    names = list(series)
    bars = rps.bar(_wrap(names), [s["requests_per_s"] for s in series.values()],
                   color=[f"C{i}" for i in range(len(names))])
    rps.bar_label(bars, fmt="%.0f")
    rps.set(title="Throughput", ylabel="requests/s")
    width = 0.8 / max(1, len(names))
    for i, (name, run) in enumerate(series.items()):
        shown = [(k.removesuffix("_ms"), run[k]) for k in LATENCIES if k in run]
        bounds = [(k.removesuffix("_ms_below") + " <", run[k]) for k in ("p95_ms_below", "p99_ms_below") if k in run]
        labels = [k for k, _ in shown + bounds]
        xs = [LATENCIES.index(f"{k.split()[0]}_ms") + i * width for k in labels]
        latency.bar(xs, [v for _, v in shown + bounds], width, color=f"C{i}", label=name,
                    hatch=["" for _ in shown] + ["//" for _ in bounds])
    latency.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(LATENCIES))],
                       [k.removesuffix("_ms") for k in LATENCIES])
    latency.set(title="Latency (hatched: reported upper bound)", ylabel="ms")
    if latency.patches:
        latency.set_yscale("log")
        latency.legend(fontsize=8)
    for ax in (rps, latency):
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    return fig


def hit_vs_miss(data: dict, title: str) -> plt.Figure:
    """p50 and p99 of cache hits and misses, for each k6 run that reports them separately."""
    series = {name: run for name, run in k6_series(data).items() if "hit_p50_ms" in run and "miss_p50_ms" in run}
    if not series:
        raise KeyError("hit_p50_ms")
    fig, ax = plt.subplots(figsize=(max(6.5, 2.6 * len(series)), 4.4))
    keys = ("hit_p50_ms", "hit_p99_ms", "miss_p50_ms", "miss_p99_ms")
    width = 0.8 / len(keys)
    for i, key in enumerate(keys):
        values = [run.get(key, 0) for run in series.values()]
        bars = ax.bar([j + i * width for j in range(len(series))], values, width, color=f"C{i}",
                      label=key.removesuffix("_ms").replace("_", " "))
        ax.bar_label(bars, labels=[f"{v:,.0f}" if v >= 10 else f"{v:.1f}" for v in values], fontsize=7)
    ax.set_xticks([j + width * (len(keys) - 1) / 2 for j in range(len(series))], _wrap(list(series)))
    ax.set(title="Repeated (cache hit) and new (miss) texts: p50 and p99", ylabel="ms", yscale="log")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig


def accuracy(data: dict, title: str) -> plt.Figure:
    """SST-2 dev accuracy and label agreement with fp32 torch, per runtime."""
    rows = data["rows"]
    fig, ax = plt.subplots(figsize=(7, 4))
    names = [r["runtime"] for r in rows]
    for i, key in enumerate(("accuracy", "label_agreement_with_torch")):
        bars = ax.bar([j + i * 0.38 for j in range(len(rows))], [r[key] for r in rows], 0.38,
                      label=key.replace("_", " "), color=f"C{i}")
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks([j + 0.19 for j in range(len(rows))], names)
    ax.set(title=title, ylim=(0.8, 1.02))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right")
    return fig


def raw_model(data: dict, title: str) -> plt.Figure:
    """Offline sequences/s vs batch size, one line per runtime and sequence length."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, runtime in enumerate(dict.fromkeys(r["runtime"] for r in data["rows"])):
        for style, tokens in zip(("o-", "s--", "^:"), sorted({r["tokens"] for r in data["rows"]}), strict=False):
            rows = sorted((r for r in data["rows"] if r["runtime"] == runtime and r["tokens"] == tokens),
                          key=lambda r: r["batch"])
            ax.plot([r["batch"] for r in rows], [r["seq_per_s"] for r in rows], style, color=f"C{i}",
                    label=f"{runtime}, {tokens} tokens")
    ax.set(title=title, xlabel="batch size", ylabel="sequences/s", xscale="log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


# result file pattern -> (what, [(png suffix, plot function)])
PLOTS: dict[str, tuple[str, list[tuple[str, Callable[[dict, str], plt.Figure]]]]] = {
    "served_*.json": ("Served predictor: throughput and p50/p99 vs concurrency", [("", served)]),
    "k6_mixed*.json": ("k6, the original test's shape: this stack and the original app",
                      [("", k6_runs), ("_hit_vs_miss", hit_vs_miss)]),
    "cache_hit.json": ("Cache-hit path through the transformer, per route", [("", k6_runs)]),
    "raw_model_*.json": ("Raw offline throughput of the inference core", [("", raw_model)]),
    "accuracy.json": ("SST-2 dev accuracy per runtime", [("", accuracy)]),
}


def render(results: Path = RESULTS, out: Path | None = None) -> list[Path]:
    """Write a PNG per plot of every result file found, and REPORT.md linking them; the PNGs written."""
    out = out or results
    out.mkdir(parents=True, exist_ok=True)
    written, sections = [], []
    for pattern, (what, plots) in PLOTS.items():
        for source in sorted(results.glob(pattern)):
            data = json.loads(source.read_text())
            title = f"{what} ({source.stem})"
            images = []
            for suffix, plot in plots:
                path = out / f"{source.stem}{suffix}.png"
                try:
                    fig = plot(data, title)
                    try:
                        fig.savefig(path, dpi=110, bbox_inches="tight")
                    finally:
                        plt.close(fig)
                except (KeyError, ValueError, TypeError) as exc:  # an older or partial result file
                    print(f"skipped {source.name} ({plot.__name__}): {exc!r}")
                    continue
                written.append(path)
                images.append(path)
            if images:
                if out.resolve() != results.resolve():
                    shutil.copy(source, out / source.name)  # the figures' evidence, beside their plots
                measured = (f"measured {data.get('when', '?')} on {data.get('cpus', '?')} CPUs "
                            f"({data.get('machine', '?')})")
                if "command" in data:
                    measured += f", {figures.measured(data)}"
                sections.append(f"## {what}\n\nFrom `{source.name}`, {measured}.\n\n"
                                + "\n\n".join(f"![{p.stem}]({p.name})" for p in images))
    if out.resolve() != results.resolve():  # the README's figures that have no plot are published too
        for name in sorted({f.file for f in figures.FIGURES}):
            if (results / name).is_file():
                shutil.copy(results / name, out / name)
    report = out / "REPORT.md"
    report.write_text("# Benchmark report\n\nRendered by `python -m bench.plots` from the JSON results in "
                      f"`{_shown(results)}`; `make bench` re-runs the benchmarks and this.\n\n"
                      + ("\n\n".join(sections) if sections else "No result files found.") + "\n")
    for path in [*written, report]:
        print(f"-> {_shown(path)}")
    return written


def _wrap(names: list[str]) -> list[str]:
    return [textwrap.fill(name, 14) for name in names]


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(RESULTS.parent.parent))
    except ValueError:  # another checkout's results: name the folder, not this machine's layout
        return "/".join(path.resolve().parts[-2:])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the *.json results")
    parser.add_argument("--out", type=Path, default=None, help="where to write the PNGs and REPORT.md "
                        "(default: beside the results)")
    parser.add_argument("--readme", type=Path, default=None, help="rewrite this README's figures block "
                        "from the result files in the output folder")
    args = parser.parse_args()
    render(args.results, args.out)
    if args.readme:
        figures.write_readme(args.readme, args.out or args.results)
