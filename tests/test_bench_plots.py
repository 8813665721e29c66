"""bench.plots renders every result file it knows into a PNG and links each from REPORT.md."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from bench import common, figures, plots
from harness.processes import REPO

SERVED = {"when": "2026-11-25T10:00:00", "cpus": 2, "machine": "x86_64", "rows": [
    {"server": server, "concurrency": c, "requests_per_s": rps * (1 + c / 64), "p50_ms": c * 5.0, "p99_ms": c * 11.0}
    for server, rps in (("batching", 70), ("no-batching", 60), ("naive-torch", 20)) for c in (1, 8, 32, 64)],
    "summary": {"raw_batch32_seq_per_s": 160.0}}
RUN = {"requests_per_s": 1000.0, "p50_ms": 5.6, "p95_ms": 25.0, "p99_ms": 111.0, "hit_p50_ms": 4.0, "hit_p99_ms": 18.0,
       "miss_p50_ms": 69.0, "miss_p99_ms": 204.0, "miss_requests": 50}
# The shape bench.k6_mix writes: a row per run, by target, and the original team's reported figures.
K6 = {"when": "2026-11-25T10:05:00", "cpus": 2, "machine": "x86_64", "series": [{"target": "this stack", **RUN}],
      "original_reported": {"requests_per_s": 81.8, "p99_ms_below": 2000, "failures": 0}}
# The shape bench.cache_hit writes: a row per side (`cache`) and route, named by both (`target`).
CACHE_HIT = {"rows": [{"target": f"{cache}, {route}", "cache": cache, "route": route, "requests_per_s": rps,
                       "p50_ms": 9.0, "p95_ms": 13.0, "p99_ms": p99}
                      for cache, route, rps, p99 in (("near cache", "/v1/models/sentiment:predict", 3000.0, 17.0),
                                                     ("near cache", "/bulk-predict", 2800.0, 20.0),
                                                     ("one Redis node", "/v1/models/sentiment:predict", 2200.0, 8.7),
                                                     ("3-master Redis Cluster", "/v1/models/sentiment:predict", 2100.0,
                                                      9.7))]}


def write(directory, name, data):
    (directory / name).write_text(json.dumps(data))


def test_every_result_file_becomes_a_png_linked_from_the_report(tmp_path):
    results, out = tmp_path / "results", tmp_path / "docs"
    results.mkdir()
    write(results, "served_distilbert_onnx.json", SERVED)
    write(results, "k6_mixed.json", K6)
    write(results, "cache_hit.json", CACHE_HIT)
    written = plots.render(results, out)
    names = {p.name for p in written}
    assert names == {"served_distilbert_onnx.png", "k6_mixed.png", "cache_hit.png"}
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    report = (out / "REPORT.md").read_text()
    assert set(re.findall(r"!\[[^]]*\]\(([^)]+)\)", report)) == names
    assert f"From `served_distilbert_onnx.json`, measured {figures.measured(SERVED)}." in report


# bench.k6_mix with the original app measured beside this stack.
K6_SERIES = {"when": "2026-11-25T11:54:03", "cpus": 2, "machine": "x86_64",
             "summary": {"this_stack_requests_per_s": 598.0},
             "series": [{"target": "original app", **RUN, "requests_per_s": 330.0},
                        {"target": "this stack", **RUN},
                        {"target": "this stack, fixed rate", **RUN, "p99_ms": 15865.0}],
             "original_reported": {"requests_per_s": 81.8, "p99_ms_below": 2000, "failures": 0}}


def test_k6_plots_every_series_the_result_holds(tmp_path):
    assert list(plots.k6_series(K6)) == ["this stack", "original reported"]
    assert list(plots.k6_series(K6_SERIES)) == ["original app", "this stack", "this stack, fixed rate",
                                                "original reported"]
    assert list(plots.k6_series(CACHE_HIT)) == ["near cache, /v1/models/sentiment:predict", "near cache, /bulk-predict",
                                                "one Redis node, /v1/models/sentiment:predict",
                                                "3-master Redis Cluster, /v1/models/sentiment:predict"]
    write(tmp_path, "k6_mixed_run1.json", K6_SERIES)
    assert [p.name for p in plots.render(tmp_path)] == ["k6_mixed_run1.png"]


def test_a_result_file_the_plot_cannot_read_is_skipped_not_fatal(tmp_path):
    write(tmp_path, "k6_mixed.json", {"series": [{"target": "this stack", "requests_per_s": 10.0}]})
    write(tmp_path, "cache_hit.json", {"unexpected": True})
    assert [p.name for p in plots.render(tmp_path)] == ["k6_mixed.png"]
    assert "No result files found" not in (tmp_path / "REPORT.md").read_text()


# bench.figures: the README's figures, each from one published results file.
COMMIT = re.compile(r"[0-9a-f]{40}")
MEASURED = {"when": "2026-12-01T14:00:00", "cpus": 2, "cpu": {"model_name": "AMD EPYC", "avx2": True},
            "load_average_at_end": [1.5, 1.0, 0.5], "command": "python -m bench.cache_hit --duration 15s",
            "commit": "0123456789abcdef"}


def test_each_figure_is_read_from_its_results_file_and_says_how_it_was_measured(tmp_path):
    write(tmp_path, "cache_hit.json", {**MEASURED, **CACHE_HIT})
    k6_keys = {f.path[-1] for f in figures.FIGURES if f.file == "k6_mixed.json"}
    write(tmp_path, "k6_mixed.json", {**MEASURED, "summary": {**dict.fromkeys(k6_keys, 1.0),
                                                             "this_stack_requests_per_s": 1151.4,
                                                             "x_original_app_as_written_requests_per_s": 39.83}})
    block = figures.render(tmp_path)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in block.splitlines() if line.startswith("| ")}
    # the row picked by its side and route, not the first one
    assert rows["cache hits, `/v1/models/sentiment:predict`"] == \
        "| cache hits, `/v1/models/sentiment:predict` | 3,000 req/s | `cache_hit.json` |"
    assert "| 2,800 req/s |" in rows["cache hits, `/bulk-predict`"]
    assert "| 8.7 ms |" in rows["cache hits through one Redis node: p99"]
    assert ("- `cache_hit.json`: 2026-12-01T14:00:00, `012345678`, 2 CPUs AMD EPYC (AVX2), load 1.5: "
            "`python -m bench.cache_hit --duration 15s`") in block.splitlines()
    assert "| 1,151 req/s |" in rows["k6, 10 VUs, 95% hits: this stack"]
    assert "| 39.8x |" in rows["this stack vs the original app as written"]
    # A figure whose file is absent is named as such; a published file that lacks it fails the render.
    assert "served DistilBERT `onnx`, batching, 32 clients" not in rows
    assert "`served_distilbert_onnx.json`" in block.split("Not published yet: ")[1]
    write(tmp_path, "k6_mixed.json", {**MEASURED, "summary": {"this_stack_requests_per_s": 1151.4}})
    with pytest.raises(KeyError, match=r"k6_mixed\.json has no"):
        figures.render(tmp_path)


def test_plots_publish_the_results_files_and_rewrite_the_readme_block(tmp_path):
    results, out = tmp_path / "results", tmp_path / "docs"
    results.mkdir()
    write(results, "cache_hit.json", {**MEASURED, **CACHE_HIT})
    write(results, "soak.json", {**MEASURED, "requests": 14640, "5xx": 0, "wrong_answers": 0,
                                 "max_rss_mib": {"predictor": 400, "transformer": 150, "redis": 10}})
    write(results, "unrelated.json", MEASURED)
    plots.render(results, out)
    assert {p.name for p in out.glob("*.json")} == {"cache_hit.json", "soak.json"}
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Performance\n\nBefore.\n\n{figures.BEGIN}\nold\n{figures.END}\n\nAfter.\n")
    figures.write_readme(readme, out)
    text = readme.read_text()
    assert figures.block(text) == figures.render(out)
    assert "| 14,640 |" in text and text.startswith("# x\n") and text.endswith("\n\nAfter.\n")
    assert quoted_again(text, out) == []
    readme.write_text(text.replace("After.", "Cache hits: 3,000 req/s."))
    assert quoted_again(readme.read_text(), out) == ["3,000 req/s"]


def quoted_again(readme: str, published: Path = figures.PUBLISHED) -> list[str]:
    """Published figures the Performance section also states outside the block (each is quoted once)."""
    start = readme.index("## Performance")
    end = readme.find("\n## ", start + 1)
    section = readme[start:end if end != -1 else None].replace(figures.block(readme), "")
    data = figures.published_files(published)
    shown = [f.shown(data[f.file]) for f in figures.FIGURES if f.file in data]
    # A figure as a whole token ("1.5 s", not the "1.5" of "1.55 s"); a bare 0 (no 5xx) says nothing on its own.
    return [value for value in shown if value != "0"
            and re.search(rf"(?<![\w.,]){re.escape(value)}(?![\w%]|[.,]\d)", section)]


def test_the_readme_quotes_the_published_figures_once_as_they_render():
    readme = (REPO / "README.md").read_text()
    rerun = "python -m bench.plots --out docs/bench --readme README.md"
    assert figures.block(readme) == figures.render(), f"the README's figures block is stale: {rerun}"
    assert quoted_again(readme) == []


def test_every_published_figure_measured_committed_code():
    dirty = [name for name, data in figures.published_files().items() if not COMMIT.fullmatch(data["commit"])]
    assert not dirty, f"{dirty} measured uncommitted changes (+dirty): commit, re-run, publish"
    assert "+dirty" in figures.measured({**MEASURED, "commit": "0123456789abcdef+dirty"})


def test_every_results_file_says_where_what_and_by_which_command_it_was_measured(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    data = json.loads(common.write_result("example", {"rows": [{"requests_per_s": 1.0}]}).read_text())
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert data["commit"] in (head, f"{head}+dirty")
    assert data["command"].startswith("python ") and data["cpu"]["model_name"] and data["cpus"] >= 1
    assert data["rows"] == [{"requests_per_s": 1.0}]
    assert "`python " in figures.measured(data) and head[:9] in figures.measured(data)
