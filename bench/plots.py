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
    """Every run a k6 result holds, by name: its `series` (bench.k6_mix, by `target`) or `rows`
    (bench.cache_hit, by `route`), and the original team's reported figures."""
    series = {run.get("target") or run["route"]: run for run in data.get("series") or data.get("rows") or []}
    if "original_reported" in data:
        series["original reported"] = data["original_reported"]
    return series


def grouped_bars(ax: plt.Axes, groups: list[str], sets: dict[str, list[float | None]],
                 label: Callable[[float], str] = lambda v: f"{v:,.0f}" if v >= 10 else f"{v:.1f}") -> None:
    """A bar per set in each group, each with its value written on it; a value a run did not report
    (None) draws no bar."""
    width = 0.8 / len(sets)
    for i, (name, values) in enumerate(sets.items()):
        bars = ax.bar([j + i * width for j in range(len(groups))], [v or 0 for v in values], width,
                      color=f"C{i}", label=name)
        ax.bar_label(bars, labels=[label(v) if v else "" for v in values], fontsize=7)
    ax.set_xticks([j + width * (len(sets) - 1) / 2 for j in range(len(groups))], _wrap(groups))
    ax.grid(axis="y", alpha=0.3)


def k6_runs(data: dict, title: str) -> plt.Figure:
    """Requests/s and p50/p95/p99 of each run the k6 result holds, side by side; the p99 bound the
    original team reported is a line."""
    series = k6_series(data)
    if not series:
        raise KeyError("requests_per_s")
    fig, (rps, latency) = plt.subplots(1, 2, figsize=(max(11, 3 + 2.2 * len(series)), 4.6))
    bars = rps.bar(_wrap(list(series)), [s["requests_per_s"] for s in series.values()],
                   color=[f"C{i}" for i in range(len(series))])
    rps.bar_label(bars, fmt="%.0f")
    rps.set(title="Throughput", ylabel="requests/s")
    rps.grid(axis="y", alpha=0.3)
    measured = {name: run for name, run in series.items() if "p50_ms" in run}
    if measured:
        grouped_bars(latency, list(measured),
                     {key.removesuffix("_ms"): [run.get(key) for run in measured.values()] for key in LATENCIES})
        latency.set_yscale("log")
    bound = data.get("original_reported", {}).get("p99_ms_below")
    if bound:
        latency.axhline(bound, color="grey", linestyle=":", label=f"original reported: p99 < {bound:,} ms")
    latency.set(title="Latency", ylabel="ms")
    if measured or bound:
        latency.legend(fontsize=8)
    fig.suptitle(title)
    return fig


def hit_vs_miss(data: dict, title: str) -> plt.Figure:
    """p50 and p99 of cache hits and misses, for each k6 run that reports them separately."""
    series = {name: run for name, run in k6_series(data).items() if "hit_p50_ms" in run and "miss_p50_ms" in run}
    if not series:
        raise KeyError("hit_p50_ms")
    fig, ax = plt.subplots(figsize=(max(6.5, 2.6 * len(series)), 4.4))
    keys = ("hit_p50_ms", "hit_p99_ms", "miss_p50_ms", "miss_p99_ms")
    grouped_bars(ax, list(series), {key.removesuffix("_ms").replace("_", " "): [run.get(key) for run in series.values()]
                                    for key in keys})
    ax.set(title="Repeated (cache hit) and new (miss) texts: p50 and p99", ylabel="ms", yscale="log")
    ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig


def accuracy(data: dict, title: str) -> plt.Figure:
    """SST-2 dev accuracy and label agreement with fp32 torch, per runtime."""
    rows = data["rows"]
    fig, ax = plt.subplots(figsize=(7, 4))
    grouped_bars(ax, [r["runtime"] for r in rows],
                 {key.replace("_", " "): [r[key] for r in rows] for key in ("accuracy", "label_agreement_with_torch")},
                 label="{:.3f}".format)
    ax.set(title=title, ylim=(0.8, 1.02))
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
    """Write a PNG per plot of every result file found, and REPORT.md linking them; the PNGs written.
    With `out` elsewhere, the result files plotted and those the README's figures name are copied
    there too: the evidence beside the plots."""
    out = out or results
    out.mkdir(parents=True, exist_ok=True)
    written, sections, plotted = [], [], set()
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
                plotted.add(source.name)
                sections.append(f"## {what}\n\nFrom `{source.name}`, measured {figures.measured(data)}.\n\n"
                                + "\n\n".join(f"![{p.stem}]({p.name})" for p in images))
    if out.resolve() != results.resolve():
        for name in sorted(plotted | set(figures.FILES)):
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
