"""bench/k6/deployment.js, the load test users point at their own deployment, run against the local stack."""

from __future__ import annotations

import json
import subprocess

import pytest

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
