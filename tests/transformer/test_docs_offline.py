"""`/docs` works without egress: a real headless Chromium renders Swagger UI from a real transformer,
and every request the page makes stays on the transformer (Chromium's own NetLog is the witness).

Chromium runs with no route out (`--host-resolver-rules` resolves every name but 127.0.0.1 to
nothing), so a page that still loaded its scripts from a CDN would stay blank and the NetLog would
show the attempt. Requests of the page are the ones whose network isolation key has the page's site
as its top frame; the browser's own background calls (component updater, ...) carry another key.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from harness.processes import TransformerProcess

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
LOCAL_SITE = "http://127.0.0.1"


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("no chromium for the /docs browser test: apt-get install -y chromium (Debian's package)")
    return found


def browse(url: str, work: Path, *extra: str) -> tuple[str, list[str]]:
    """Load `url` in a fresh headless Chromium: (the DOM after its scripts ran, URLs the page requested)."""
    net_log = work / "netlog.json"
    result = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={work / 'profile'}", f"--log-net-log={net_log}",
         "--virtual-time-budget=20000", "--window-size=1280,1600", *extra, url],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, page_requests(json.loads(net_log.read_text()))


def page_requests(net_log: dict) -> list[str]:
    """URLs of every request started on behalf of a page served from 127.0.0.1 (any port)."""
    start_job = net_log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [e["params"]["url"] for e in net_log["events"]
            if e["type"] == start_job and "url" in e.get("params", {})
            and e["params"].get("network_isolation_key", "").startswith(LOCAL_SITE + " ")]


@pytest.fixture(scope="module")
def transformer(redis_server):
    # No predictor: /docs and /openapi.json need none, and nothing here predicts.
    proc = TransformerProcess("127.0.0.1:9", redis_server.url).start()
    yield proc
    proc.stop()


def test_swagger_ui_renders_every_route_from_the_transformer_alone(transformer, tmp_path):
    dom, requests = browse(f"{transformer.url}/docs", tmp_path, "--dump-dom")
    # Rendered by Swagger UI's JavaScript: these elements are not in the HTML the server sends.
    paths = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom))
    assert {"/bulk-predict", "/v1/models/sentiment:predict", "/health"} <= paths, paths
    assert 'class="swagger-ui' in dom
    # Every request of the page went to this transformer, and the assets were among them.
    origin = urlsplit(transformer.url)
    assert requests and {(urlsplit(u).scheme, urlsplit(u).netloc) for u in requests} == {(origin.scheme,
                                                                                          origin.netloc)}, requests
    requested = {urlsplit(u).path for u in requests}
    assert {"/docs", "/openapi.json", "/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"} <= requested
    # And the page refers to nothing elsewhere that a later click could fetch.
    for ref in re.findall(r'(?:src|href)="([^"]+)"', dom):
        assert not urlsplit(ref).netloc or urlsplit(ref).netloc == origin.netloc, ref


def test_the_network_check_sees_a_page_that_reaches_for_a_cdn(tmp_path):
    """The witness can fail: FastAPI's default Swagger page (CDN assets), served from 127.0.0.1."""
    from fastapi.openapi.docs import get_swagger_ui_html

    page = get_swagger_ui_html(openapi_url="/openapi.json", title="CDN").body

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dom, requests = browse(f"http://127.0.0.1:{server.server_port}/docs", tmp_path, "--dump-dom")
    finally:
        server.shutdown()
    assert "cdn.jsdelivr.net" in {urlsplit(u).hostname for u in requests}, requests
    assert "opblock-summary-path" not in dom  # and with no route out, nothing rendered
