"""`make serve`'s readiness banner (the Procfile's `ready` process): waits until the local stack answers,
prints where it is and how to call it."""

from __future__ import annotations

import os
import signal
import time

import httpx


def main() -> None:
    http = os.environ.get("HTTP_PORT", "8080")
    predictor = os.environ.get("PREDICTOR_HTTP_PORT", "8085")
    urls = [f"http://127.0.0.1:{predictor}/v2/models/sentiment/ready", f"http://127.0.0.1:{http}/v2/health/ready"]
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            if all(httpx.get(u, timeout=1).status_code == 200 for u in urls):
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    else:
        raise SystemExit("the stack did not become ready within 600 s; see the logs above")
    base = f"http://localhost:{http}"
    print(f"Sentiment service ready at {base} (gRPC on localhost:{os.environ.get('GRPC_PORT', '8081')})\n"
          f"  curl -s {base}/v1/models/sentiment:predict -H 'content-type: application/json' "
          f"-d '{{\"text\": [\"I love this movie\", \"This was a terrible waste of time\"]}}'\n"
          "Press Ctrl-C to stop everything.", flush=True)
    signal.pause()


if __name__ == "__main__":
    main()
