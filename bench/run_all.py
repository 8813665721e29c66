"""`make bench`: every benchmark in turn, as the README's figures were measured; each prints its table and
writes bench/results/<name>.json, then the plots of them (bench/results/*.png and REPORT.md)."""

from __future__ import annotations

from bench import accuracy, cache_hit, cold_start, fairness, k6_mix, plots, served, soak, triton


def main() -> None:
    accuracy.run()  # per runtime, what --runtime auto's gate sees on this CPU, and served
    for runtime in ("onnx", "onnx-int8"):
        served.run("distilbert", runtime)
    cache_hit.run()  # the near cache as shipped, then Redis alone: one node, a 3-master cluster
    k6_mix.run()  # the original app and this stack side by side, then the fixed arrival rate
    # The same fixed arrival rate on onnx-int8; the original app does not depend on the predictor's runtime.
    k6_mix.run(skip_original=True, predictor_extra=["--runtime", "onnx-int8"], name="k6_mixed_onnx_int8")
    cold_start.run()
    soak.run()
    fairness.run(fairness.TOKEN_BUDGET_BASELINE)
    triton.run(models=("distilbert",), clients=(32,), rounds=2, seconds=15)  # the README's run (its venv first)
    plots.render()


if __name__ == "__main__":
    main()
