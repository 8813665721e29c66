"""The self-contained export directory (what the modelcar ships) and the torch-free predictor serving it."""

from __future__ import annotations

import json
import shutil
import threading
import time

import httpx
import numpy as np
import pytest

from harness.processes import PredictorProcess, http_ready
from harness.tiny_model import build_tiny_model
from predictor.classifier import SentimentClassifier
from predictor.export import export
from predictor.model_dir import EXPORT_MANIFEST, fingerprint, model_fingerprint

TEXTS = ["the movie was great fun", "terrible boring plot", "i love this film"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    source = build_tiny_model(tmp_path_factory.mktemp("tiny"))
    out = tmp_path_factory.mktemp("export") / "tiny"
    export(source, out)
    return source, out


def test_export_holds_config_tokenizer_and_onnx_and_no_pytorch_weights(tiny):
    _, out = tiny
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "model.onnx", "model-int8-per-channel.onnx",
            EXPORT_MANIFEST} <= names
    assert not names & {"model.safetensors", "pytorch_model.bin"}


def test_export_answers_as_the_source_model_under_the_same_fingerprint(tiny, tmp_path):
    source, out = tiny
    assert model_fingerprint(out) == fingerprint(source)
    for runtime, atol in (("onnx", 1e-5), ("onnx-int8", 1e-5)):
        served = SentimentClassifier(out, runtime=runtime, onnx_cache_dir=tmp_path / "never-written")
        original = SentimentClassifier(source, runtime=runtime, onnx_cache_dir=tmp_path / runtime)
        assert served.version == original.version == f"{fingerprint(source)}-{runtime}"
        np.testing.assert_allclose(served.predict(TEXTS), original.predict(TEXTS), atol=atol)
        assert served.labels == ["NEG", "NEUTRAL", "POS"]
    assert not (tmp_path / "never-written").exists()  # the shipped exports were used as they are


@pytest.mark.parametrize("tamper", ["small file edited", "model file resized", "file missing"])
def test_an_export_that_no_longer_matches_its_manifest_is_hashed_instead(tiny, tmp_path, tamper):
    source, out = tiny
    changed = shutil.copytree(out, tmp_path / "changed")
    if tamper == "small file edited":
        config = json.loads((changed / "tokenizer_config.json").read_text())
        (changed / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 32}))
    elif tamper == "model file resized":
        with (changed / "model.onnx").open("ab") as f:
            f.write(b"\0")
    else:
        (changed / "model-int8-per-channel.onnx").unlink()
    assert model_fingerprint(changed) not in (fingerprint(source), "")
    assert model_fingerprint(changed) == fingerprint(changed)


def test_predictor_serving_an_export_never_imports_torch_or_transformers(exported_model, predictor):
    # PYTHONPROFILEIMPORTTIME makes Python log every module it imports (to the process log).
    proc = PredictorProcess(exported_model, env={"PYTHONPROFILEIMPORTTIME": "1"}).start()
    try:
        answer = httpx.post(f"{proc.url}/v1/models/sentiment:predict", json={"instances": TEXTS}, timeout=30).json()
        direct = httpx.post(f"{predictor.url}/v1/models/sentiment:predict", json={"instances": TEXTS},
                            timeout=30).json()
        imported = {line.rsplit("|", 1)[1].strip() for line in proc.log().splitlines()
                    if line.startswith("import time:") and "|" in line}
    finally:
        proc.stop()
    assert {"onnxruntime", "tokenizers", "kserve"} <= imported  # the log really lists the imports
    assert not {m for m in imported if m.split(".")[0] in ("torch", "transformers")}
    # The same model and runtime as the predictor serving the original directory: the same answers and version.
    assert answer["model_version"] == direct["model_version"]
    for row, expected in zip(answer["predictions"], direct["predictions"], strict=True):
        assert [r["label"] for r in row] == [e["label"] for e in expected]
        np.testing.assert_allclose([r["score"] for r in row], [e["score"] for e in expected], atol=1e-5)


def test_async_model_init_waits_for_the_modelcar_link(exported_model, tmp_path):
    link = tmp_path / "mnt" / "models"
    proc = PredictorProcess(link, env={"MODEL_INIT_MODE": "async", "MODEL_WAIT_S": "60"}).start(wait=False)
    try:
        # The modelcar links /mnt/models to its image's /models some time after this container started.
        linker = threading.Timer(1.5, lambda: (link.parent.mkdir(), link.symlink_to(exported_model)))
        linker.start()
        proc.wait_ready(http_ready(f"{proc.url}/v2/models/sentiment/ready"), timeout=120)
        answer = httpx.post(f"{proc.url}/v1/models/sentiment:predict", json={"instances": ["I love it"]}, timeout=30)
        assert answer.json()["predictions"][0][0]["label"] == "POSITIVE"
        assert "waiting up to 60s for the model" in proc.log()
    finally:
        proc.stop()


def test_async_model_init_gives_up_naming_what_is_missing(tmp_path):
    proc = PredictorProcess(tmp_path / "absent", env={"MODEL_INIT_MODE": "async", "MODEL_WAIT_S": "1"})
    proc.start(wait=False)
    deadline = time.monotonic() + 60
    while proc.alive and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not proc.alive and proc.proc.returncode != 0
    assert "no config.json in" in proc.log() and "after 1s (--model_wait_s)" in proc.log()
