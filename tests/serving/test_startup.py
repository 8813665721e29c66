"""The KServe start-up guard and the one-worker rule, in fresh processes (the test process keeps kserve out)."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from harness.processes import REPO, TransformerProcess, free_port


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_the_pinned_kserve_passes_the_guard():
    result = run_python("from serving.startup import check_kserve; check_kserve(); print('ok')")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


REST = "from kserve.protocol.rest.server import RESTServer as m; add = m._add_exception_handlers\n"
REPLY = "from starlette.responses import JSONResponse\n"


@pytest.mark.parametrize(("break_kserve", "named"), [
    # KServe installing other handlers for the exceptions whose handlers we replace.
    (REST + REPLY + "def other(self, app):\n    add(self, app)\n"
     "    app.add_exception_handler(NotImplementedError, lambda r, e: JSONResponse({'x': 1}, 501))\n"
     "m._add_exception_handlers = other",
     "kserve.protocol.rest.server.not_implemented_error_handler"),
    (REST + REPLY + "def other(self, app):\n    add(self, app)\n"
     "    app.add_exception_handler(Exception, lambda r, e: JSONResponse({'x': 1}, 500))\n"
     "m._add_exception_handlers = other",
     "kserve.protocol.rest.server.generic_exception_handler"),
    # The REST unload route no longer going through the extension we refuse on.
    ("from kserve.protocol.rest.v2_endpoints import V2Endpoints as m\n"
     "async def unload(self, model_name): return {'name': model_name, 'unload': True}\nm.unload = unload",
     "ModelRepositoryExtension.unload (refused)"),
    ("from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor as m\n"
     "async def handle(self, ex, request, context, method): await context.abort(None, 'internal')\n"
     "m.handle_exception = handle",
     "KServe's gRPC interceptor"),
    ("import importlib; m = importlib.import_module('kserve.utils.utils')\n"
     "m.is_structured_cloudevent = lambda body: False",
     "kserve.utils.utils.is_structured_cloudevent"),
    ("import importlib; m = importlib.import_module('kserve.utils.utils'); del m.is_structured_cloudevent",
     "serving.kserve_seam cannot import"),
    ("from kserve import Model\nasync def call(self, body, headers=None, verb=None): return {}\n"
     "Model.__call__ = call",
     "Model.__call__ no longer answers (response, response headers)"),
    ("import importlib; m = importlib.import_module('kserve.constants.constants'); "
     "m.FASTAPI_APP_IMPORT_STRING = 'elsewhere:app'",
     "kserve.model_server:app"),
    ("from kserve.model_server import ModelServer as m; del m._serve", "ModelServer._serve"),
    # KServe building its OpenAPI document at start, before the transformer adds its fast routes.
    (REST + "register = m._register_endpoints\ndef eager(self, app):\n    register(self, app)\n"
     "    app.openapi_schema = app.openapi()\nm._register_endpoints = eager",
     "kserve_seam.extend_openapi"),
])
def test_a_moved_kserve_internal_fails_start_up_loudly(break_kserve, named):
    result = run_python(f"{break_kserve}\nfrom serving.startup import check_kserve; check_kserve()")
    assert result.returncode != 0
    assert "KServeChanged: this KServe version differs" in result.stderr and named in result.stderr


@pytest.mark.parametrize("command", [["predictor", "--model_dir", "/nonexistent"], ["transformer"]])
def test_more_than_one_worker_is_refused_at_start_up(command):
    result = subprocess.run([sys.executable, "-m", *command, "--workers", "2"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "--workers=2 is not supported: run one worker per pod and scale pods" in result.stderr


def test_one_worker_as_kserve_passes_it_is_accepted(tmp_path):
    """The manifests pin --workers=1 so KServe does not inject containerConcurrency: both must take it."""
    result = subprocess.run([sys.executable, "-m", "predictor", "--workers=1", "--model_dir", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "config.json missing" in result.stderr and "--workers" not in result.stderr  # got to the model
    transformer = TransformerProcess(f"127.0.0.1:{free_port()}", f"redis://127.0.0.1:{free_port()}/0",
                                     extra=["--workers=1"])
    try:
        transformer.start()
        assert httpx.get(f"{transformer.url}/health", timeout=5).json() == {"status": "healthy"}
    finally:
        transformer.stop()


def test_the_transformer_imports_neither_the_predictor_nor_torch():
    result = run_python("import sys, transformer.__main__, transformer.routes, transformer.model\n"
                        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('predictor', 'torch')))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
