"""`make serve`, driven exactly as the README says, with curl-equivalent calls."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import httpx
import numpy as np
import tritonclient.grpc as grpcclient

from harness.processes import LOG_DIR, REPO, free_port, wait_until


def test_make_serve_runs_the_whole_stack_and_stops_cleanly(model_dir):
    ports = {name: str(free_port()) for name in
             ("HTTP_PORT", "GRPC_PORT", "PREDICTOR_HTTP_PORT", "PREDICTOR_GRPC_PORT", "REDIS_PORT")}
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"make-serve-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(["make", "serve"], cwd=REPO, env={**os.environ, **ports, "MODEL_DIR": str(model_dir)},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://localhost:{ports['HTTP_PORT']}"
    try:
        wait_until(lambda: "Sentiment service ready at" in log_path.read_text(), 300, "make serve", proc, log_path)
        banner = log_path.read_text()
        assert f"{base}/v1/models/sentiment:predict" in banner

        # The README's curl examples.
        r = httpx.post(f"{base}/v1/models/sentiment:predict",
                       json={"text": ["I love this movie", "This was a terrible waste of time"]})
        assert r.status_code == 200
        pos, neg = r.json()["predictions"]
        assert pos[0]["label"] == "POSITIVE" and neg[0]["label"] == "NEGATIVE"
        r = httpx.post(f"{base}/bulk-predict", json={"text": ["I love this movie"]})
        assert r.json()["predictions"][0][0]["label"] == "POSITIVE"
        r = httpx.post(f"{base}/v2/models/sentiment/infer", json={"inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["I love this movie"]}]})
        probs = dict(zip(r.json()["outputs"][1]["data"], r.json()["outputs"][0]["data"], strict=True))
        assert probs["POSITIVE"] > 0.9
        client = grpcclient.InferenceServerClient(f"localhost:{ports['GRPC_PORT']}")
        tensor = grpcclient.InferInput("text", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([b"This was a terrible waste of time"], dtype=np.object_))
        assert client.infer("sentiment", [tensor]).as_numpy("probabilities")[0, 0] > 0.9
        assert httpx.get(f"{base}/health").json() == {"status": "healthy"}
        assert "sentiment_cache_hits_total" in httpx.get(f"{base}/metrics").text
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does
        proc.wait(60)
    # Everything is gone: no port still listening.
    for port in ports.values():
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", int(port))) != 0, f"port {port} still open after Ctrl-C"
