"""`make bench`: every benchmark in turn; each prints its table and writes bench/results/<name>.json,
then the plots of them (bench/results/*.png and REPORT.md)."""

from __future__ import annotations

from bench import accuracy, cache_hit, cold_start, k6_mix, plots, raw_model, served, soak


def main() -> None:
    raw_model.run("distilbert")
    accuracy.run()
    for runtime in ("onnx", "onnx-int8"):
        served.run("distilbert", runtime)
    cache_hit.run()
    k6_mix.run()
    cold_start.run()
    soak.run()
    plots.render()


if __name__ == "__main__":
    main()
