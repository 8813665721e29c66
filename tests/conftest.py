"""Session-wide real components: one redis-server and one predictor on free ports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.processes import MODEL_DIR, SHARED, PredictorProcess, RedisServer

# kserve and tritonclient register the same protobuf names; the test process talks to servers
# with tritonclient and httpx only, so keep kserve out of it.
assert "kserve" not in sys.modules, "tests must not import kserve (protobuf clash with tritonclient)"


def pytest_collection_modifyitems(config, items):
    del config
    for item in items:
        if "kserve" in sys.modules:
            raise RuntimeError(f"{item.nodeid}: kserve was imported into the test process")


@pytest.fixture(scope="session")
def model_dir():
    if not (MODEL_DIR / "config.json").is_file():
        pytest.skip(f"shared model not found at {MODEL_DIR}; set SHARED_DIR to the shared/ directory")
    return MODEL_DIR


@pytest.fixture(scope="session")
def shared_dir():
    if not SHARED.is_dir():
        pytest.skip(f"shared directory not found at {SHARED}; set SHARED_DIR")
    return SHARED


@pytest.fixture(scope="session")
def exported_model(model_dir, tmp_path_factory):
    """The shared model as `python -m predictor.export --out` writes it: what the modelcar holds."""
    out = tmp_path_factory.mktemp("export") / "sentiment-minilm-sst2"
    subprocess.run([sys.executable, "-m", "predictor.export", str(model_dir), "--out", str(out)], check=True,
                   capture_output=True, timeout=600)
    return out


@pytest.fixture(scope="session")
def predictor(model_dir):
    proc = PredictorProcess(model_dir, extra=["--max_texts", "64", "--max_chars", "2000"]).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()
