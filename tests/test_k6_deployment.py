"""bench/k6/deployment.js, the load test users point at their own deployment, run against the local stack."""

from __future__ import annotations

import json
import subprocess

import pytest

from bench import driver, fairness
from bench.driver import k6_binary
from harness.processes import REPO, TransformerProcess

SCRIPT = REPO / "bench" / "k6" / "deployment.js"


@pytest.fixture(scope="module")
def transformer(predictor, redis_server):
    proc = TransformerProcess(f"127.0.0.1:{predictor.http_port}", redis_server.url).start()
    yield proc
    proc.stop()


def k6(tmp_path, **env) -> tuple[subprocess.CompletedProcess, dict]:
    summary = tmp_path / "summary.json"
    args = [k6_binary(), "run", "--quiet", "--summary-export", str(summary),
            *(a for k, v in env.items() for a in ("-e", f"{k}={v}")), str(SCRIPT)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=180)
    return result, json.loads(summary.read_text())["metrics"] if summary.exists() else {}


@pytest.mark.parametrize("route", ["bulk", "v1"])
def test_runs_the_original_shape_against_a_deployment(tmp_path, transformer, route):
    result, metrics = k6(tmp_path, BASE=transformer.url, ROUTE=route, VUS=2, DURATION="2s", HIT_RATIO=0.5)
    assert result.returncode == 0, result.stdout + result.stderr
    assert metrics["checks"]["fails"] == 0 and metrics["checks"]["passes"] > 0
    assert metrics["http_req_failed"]["value"] == 0
    assert metrics["http_req_duration{kind:hit}"]["max"] > 0 and metrics["http_req_duration{kind:miss}"]["max"] > 0


def test_refuses_to_run_without_base(tmp_path):
    result, _ = k6(tmp_path, DURATION="1s")
    assert result.returncode != 0
    assert "set BASE" in result.stdout + result.stderr


def test_stops_when_the_deployment_does_not_answer_the_warm_up(tmp_path, transformer):
    result, _ = k6(tmp_path, BASE=transformer.url, ROUTE="v1", MODEL="no-such-model", VUS=1, DURATION="1s")
    assert result.returncode != 0
    assert "answered 404" in result.stdout + result.stderr


# bench/k6/mixed.js through bench.driver: the one scenario every HTTP benchmark runs, in each body shape.
@pytest.mark.parametrize(("server", "route", "body"), [
    ("transformer", "/bulk-predict", "text"),
    ("predictor", "/v1/models/sentiment:predict", "instances"),
    ("predictor", "/v2/models/sentiment/infer", "v2"),
    ("predictor", "/v2/models/sentiment/infer", "v2-batched"),  # what bench/triton.py sends Triton too
])
def test_the_benchmark_scenario_drives_each_route_in_its_body_shape(request, server, route, body):
    target = request.getfixturevalue(server)
    hot, cold = ["I love this movie"], ["The plot made no sense at all"]
    if server == "transformer":
        driver.warm(f"{target.url}{route}", hot)
    result = driver.k6(f"{target.url}{route}", hot, cold, "2s", hit_ratio=0.5, vus=2, body=body)
    assert result["requests"] > 0 and result["failed_requests"] == 0
    assert result["failed_checks"] == 0  # every answer had two labels, in that route's shape
    assert result["hit_p50_ms"] > 0 and result["miss_p50_ms"] > 0  # hits and misses reported apart
    assert result["hit_requests"] > 0 and result["hit_requests"] + result["miss_requests"] == result["requests"]


def test_the_benchmark_scenario_at_a_fixed_rate_counts_what_it_could_not_send(predictor):
    result = driver.k6(f"{predictor.url}/v1/models/sentiment:predict", [], ["A film"], "2s", hit_ratio=0.0,
                       rate=20, body="instances")
    assert result["target_rate_per_s"] == 20 and result["failed_checks"] == 0
    assert 30 <= result["requests"] + result["dropped_iterations"] <= 42  # 20/s for 2 s, give or take one


def test_the_benchmark_scenario_refuses_an_unknown_body_shape(predictor):
    with pytest.raises(subprocess.CalledProcessError):
        driver.k6(f"{predictor.url}/v1/models/sentiment:predict", ["a"], [], "1s", hit_ratio=1.0, vus=1, body="xml")


def test_the_fairness_mixed_load_counts_short_and_long_requests_apart(predictor):
    """bench.fairness's mixed-length load through the same scenario: short texts repeat, long ones are unique."""
    result = fairness.mixed_load(predictor, seconds=2, clients=2, long_share=0.5)
    assert result["short_requests"] > 0 and result["long_requests"] > 0 and result["failed_requests"] == 0
    assert result["short_p99_ms"] >= result["short_p50_ms"] > 0 and result["long_p50_ms"] > 0
    alone = fairness.mixed_load(predictor, seconds=1, clients=1, long_share=0.0)
    assert alone["long_requests"] == 0 and alone["long_p50_ms"] is None and alone["short_requests"] > 0
