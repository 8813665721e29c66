"""Pictures of the results files that exist, without running anything: a PNG per plot and a REPORT.md
naming each file and how it was measured. `--out DIR` copies the files beside their plots (docs/bench/
publishes them); `--readme` rewrites the README's figures block (bench.figures) from that folder.

    python -m bench.plots [--results bench/results] [--out DIR] [--readme README.md]
"""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers and CI

import matplotlib.pyplot as plt

from bench import figures
from bench.common import RESULTS, command_line


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


def grouped_bars(ax: plt.Axes, runs: dict[str, dict], keys: tuple[str, ...]) -> None:
    """A group of bars per run, a bar per key (named without `_ms`), each with its value written on it;
    a value a run did not report draws no bar."""
    width = 0.8 / len(keys)
    for i, key in enumerate(keys):
        values = [run.get(key) for run in runs.values()]
        bars = ax.bar([j + i * width for j in range(len(runs))], [v or 0 for v in values], width,
                      color=f"C{i}", label=key.removesuffix("_ms").replace("_", " "))
        ax.bar_label(bars, labels=[(f"{v:,.0f}" if v >= 10 else f"{v:.1f}") if v else "" for v in values], fontsize=7)
    ax.set_xticks([j + width * (len(keys) - 1) / 2 for j in range(len(runs))],
                  [textwrap.fill(name, 14) for name in runs])
    ax.grid(axis="y", alpha=0.3)


def k6_runs(data: dict, title: str) -> plt.Figure:
    """Requests/s and p50/p95/p99 of each run the k6 result holds, side by side (the p99 bound the original
    team reported is a line), and hits' and misses' p50/p99 where runs had misses."""
    series = k6_series(data)
    if not series:
        raise KeyError("requests_per_s")
    split = {name: run for name, run in series.items() if run.get("miss_requests")}
    fig, (rps, latency, *kinds) = plt.subplots(1, 3 if split else 2,
                                               figsize=(max(11, 3 + 2.2 * len(series)) * (1.5 if split else 1), 4.6))
    grouped_bars(rps, series, ("requests_per_s",))
    rps.set(title="Throughput", ylabel="requests/s")
    measured = {name: run for name, run in series.items() if "p50_ms" in run}
    if measured:  # a log scale needs a value
        grouped_bars(latency, measured, ("p50_ms", "p95_ms", "p99_ms"))
        latency.set_yscale("log")
    bound = data.get("original_reported", {}).get("p99_ms_below")
    if bound:
        latency.axhline(bound, color="grey", linestyle=":", label=f"original reported: p99 < {bound:,} ms")
    latency.set(title="Latency", ylabel="ms")
    for ax in kinds:
        grouped_bars(ax, split, ("hit_p50_ms", "hit_p99_ms", "miss_p50_ms", "miss_p99_ms"))
        ax.set(title="Repeated (cache hit) and new (miss) texts", ylabel="ms", yscale="log")
    for ax in (latency, *kinds) if measured or bound else kinds:
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig


# result file pattern -> (what, [(png suffix, plot function)])
PLOTS: dict[str, tuple[str, list[tuple[str, Callable[[dict, str], plt.Figure]]]]] = {
    "served_*.json": ("Served predictor: throughput and p50/p99 vs concurrency", [("", served)]),
    "k6_mixed*.json": ("k6, the original test's shape: this stack and the original app", [("", k6_runs)]),
    "cache_hit.json": ("Cache-hit path through the transformer, per route", [("", k6_runs)]),
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
            images = []
            for suffix, plot in plots:
                path = out / f"{source.stem}{suffix}.png"
                if draw(plot, data, f"{what} ({source.stem})", path):
                    images.append(path)
            if images:
                written += images
                plotted.add(source.name)
                sections.append(f"## {what}\n\nFrom `{source.name}`, measured {figures.measured(data)}.\n\n"
                                + "\n\n".join(f"![{p.stem}]({p.name})" for p in images))
    if out.resolve() != results.resolve():
        for name in sorted(plotted | set(figures.FILES)):
            if (results / name).is_file():
                shutil.copy(results / name, out / name)
    report = out / "REPORT.md"
    report.write_text("# Benchmark report\n\nRendered by `python -m bench.plots` from the JSON results beside it; "
                      "`make bench` re-runs the benchmarks and this.\n\n"
                      + ("\n\n".join(sections) if sections else "No result files found.") + "\n")
    for path in [*written, report]:
        print(f"-> {path}")
    return written


def draw(plot: Callable[[dict, str], plt.Figure], data: dict, title: str, path: Path) -> bool:
    """Save `plot` of `data` as `path`; False, saying why, when the result file lacks what it draws."""
    try:
        fig = plot(data, title)
    except (KeyError, ValueError, TypeError) as exc:  # an older or partial result file
        print(f"skipped {path.name} ({plot.__name__}): {exc!r}")
        return False
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def main(results: str = str(RESULTS), out: str | None = None, readme: str | None = None) -> None:
    render(Path(results), Path(out) if out else None)
    if readme:
        figures.write_readme(Path(readme), Path(out or results))


if __name__ == "__main__":
    command_line(main, __doc__, results="folder of the *.json results",
                 out="where to write the PNGs and REPORT.md (default: beside the results)",
                 readme="rewrite this README's figures block from the result files in the output folder")
