"""Pod rehearsal of the dev overlay: Redis, two predictor pods and the transformer, each started from the
rendered manifest as the cluster would start it (tests/kserve/rehearsal.py), then one prediction through
transformer -> predictor -> Redis. Needs bubblewrap (make system-deps) and the shared model."""

from __future__ import annotations

import copy
import hashlib
import math
import os
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import redis

from harness.sandbox import bwrap_problem
from predictor.model_dir import fingerprint
from tests.kserve.kserve_merge import UID_MODELCAR, with_storage
from tests.kserve.rehearsal import (
    MODELS_MOUNT,
    Rehearsal,
    cpu_quantity,
    expand,
    fake_hf_download,
    kserve_transformer_args,
    passwd_group,
    quantity_bytes,
    rewrite_ports,
)
from tests.kserve.rendering import find, rendered, rendered_setup

pytestmark = pytest.mark.timeout(420)

TEXTS = ["I love this movie", "This was a terrible waste of time", "A quiet, thoughtful film."]
COLD_START_S = 300  # two predictors export ONNX at once on a shared 2-core machine


@pytest.fixture(scope="module")
def pods(tmp_path_factory, exported_model):
    problem = bwrap_problem()  # fails when bwrap is missing: make system-deps installs it
    if problem:
        pytest.skip(problem)
    docs = list(rendered("dev"))
    work = tmp_path_factory.mktemp("rehearsal")
    rehearsal = Rehearsal(docs, work)
    try:
        redis_pod = rehearsal.deployment("sentiment-redis")
        # Two predictor pods, each with its modelcar (the built image's, or the export standing in for it).
        predictors = [rehearsal.component("sentiment", "predictor", replica=f"-{i}", models=exported_model)
                      for i in range(2)]
        transformer = rehearsal.component("sentiment", "transformer")
        for pod in (redis_pod, transformer, *predictors):
            pod.wait_ready(COLD_START_S)
        yield SimpleNamespace(docs=docs, redis=redis_pod, predictors=predictors, transformer=transformer,
                              all=[redis_pod, *predictors, transformer], sidecars=rehearsal.sidecars)
    finally:
        rehearsal.stop()


def _predictor_answer(pod, texts):
    response = httpx.post(f"{pod.url()}/v1/models/sentiment:predict", json={"instances": texts}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_prediction_through_transformer_predictor_and_redis(pods):
    response = httpx.post(f"{pods.transformer.url()}/v1/models/sentiment:predict", json={"text": TEXTS}, timeout=60)
    assert response.status_code == 200, response.text
    rows = response.json()["predictions"]
    direct = _predictor_answer(pods.predictors[0], TEXTS)
    assert [row[0]["label"] for row in rows[:2]] == ["POSITIVE", "NEGATIVE"]
    for row, expected in zip(rows, direct["predictions"], strict=True):
        assert [r["label"] for r in row] == [e["label"] for e in expected]
        np.testing.assert_allclose([r["score"] for r in row], [e["score"] for e in expected], atol=1e-4)
        assert sum(r["score"] for r in row) == pytest.approx(1.0, abs=1e-5)

    # Every sentence landed in the rehearsed Redis under the key the transformer's env asks for.
    secret = find(pods.docs, "Secret", "sentiment-redis")
    client = redis.Redis(port=pods.redis.port(6379), password=pods.redis.env["REDIS_PASSWORD"], socket_timeout=5)
    assert secret["data"]["password"]  # the password came from the rendered Secret
    namespace = pods.transformer.env.get("CACHE_NAMESPACE", "sentiment")
    keys = [f"{namespace}:sentiment:{direct['model_version']}:s1:{hashlib.sha256(t.encode()).hexdigest()}"
            for t in TEXTS]
    assert all(client.mget(keys)), f"cache keys missing; Redis holds {client.keys('*')}"

    # The same request again is answered from the cache.
    again = httpx.post(f"{pods.transformer.url()}/v1/models/sentiment:predict", json={"text": TEXTS}, timeout=60)
    assert again.json() == response.json()
    metrics = httpx.get(f"{pods.transformer.url()}/metrics", timeout=10).text
    hits = [float(v) for v in re.findall(r"^sentiment_cache_hits_total(?:\{[^}]*\})? (\S+)$", metrics, re.M)]
    assert hits and sum(hits) >= len(TEXTS)  # summed over the tiers (near cache, Redis)


def test_every_predictor_pod_reports_the_same_model_version(pods, model_dir):
    versions = {_predictor_answer(pod, TEXTS[:1])["model_version"] for pod in pods.predictors}
    assert len(versions) == 1, f"pods disagree on the model version: {versions}"
    [version] = versions
    # The export carries the fingerprint of the model it was exported from.
    assert version == f"{fingerprint(model_dir)}-onnx"


def test_the_images_built_here_are_the_ones_rehearsed(pods):
    """`make images` runs before the tests: every pod of ours runs its image's own root filesystem, and the
    predictor reaches its model through KServe's modelcar (a real sidecar from the model image)."""
    for pod in [*pods.predictors, pods.transformer, *pods.sidecars]:
        assert pod.sandbox.root != Path("/"), f"{pod.name} ran on this machine's root, not its image's"
    for pod in pods.predictors:
        site = pod.sandbox.root / "opt/venv/lib/python3.11/site-packages"
        assert site.is_dir() and not (site / "torch").exists() and not (site / "transformers").exists()
        assert pod.env["MODEL_INIT_MODE"] == "async" and MODELS_MOUNT not in pod.sandbox.mounts
        assert pod.sandbox.uid == UID_MODELCAR  # KServe runs kserve-container as the modelcar's uid
    assert len(pods.sidecars) == len(pods.predictors)
    for sidecar in pods.sidecars:
        assert sidecar.process.alive and sidecar.sandbox.uid == UID_MODELCAR


def test_the_modelcar_rewrite_runs_both_containers_as_kserves_uid():
    spec = {"containers": [{"name": "kserve-container", "image": "p", "securityContext": {"runAsUser": 1000}}]}
    pod = with_storage(spec, "oci://r/m:t")
    main, sidecar = pod["containers"]
    assert main["securityContext"]["runAsUser"] == sidecar["securityContext"]["runAsUser"] == UID_MODELCAR
    assert expand(sidecar["args"][2], {}) == "ln -sf /proc/$$/root/models /mnt/models && sleep infinity"
    [init] = pod["initContainers"]
    assert "[ -d /models ]" in init["args"][2] and '"$(ls -A /models)"' in expand(init["args"][2], {})
    assert spec["containers"][0]["securityContext"] == {"runAsUser": 1000}  # not mutated


def test_fingerprint_ignores_the_storage_initializers_download_metadata(model_dir, tmp_path):
    """hf:// (components/hf-download): two pods' downloads differ in metadata timestamps only."""
    stamps = [fake_hf_download(model_dir, tmp_path / f"models-{i}", stamp)
              for i, stamp in enumerate((1764000000.25, 1764086400.75))]
    metadata = [(d / ".cache/huggingface/download/config.json.metadata").read_text() for d in stamps]
    assert metadata[0] != metadata[1]
    assert fingerprint(stamps[0]) == fingerprint(stamps[1]) == fingerprint(model_dir)


def test_predictor_threads_follow_its_cpu_limit(pods):
    """The pod's cgroup carries the manifest's CPU limit; the predictor sizes its forward passes by it."""
    for pod in pods.predictors:
        limit = cpu_quantity(pod.container["resources"]["limits"]["cpu"])
        threads = min(math.ceil(limit), len(os.sched_getaffinity(0)))
        line = f"forward passes: 1 at once, {threads} thread(s) each (cgroup CPU limit {limit:g},"
        assert line in pod.process.log(), f"{pod.name}: no '{line}' in its log"


def test_pods_stay_up_and_write_only_to_declared_volumes(pods):
    for pod in pods.all:
        assert pod.process.alive, f"{pod.name} exited:\n{pod.process.log()[-3000:]}"
        if "livenessProbe" in pod.container:
            assert pod.probe("livenessProbe"), f"{pod.name}: liveness probe fails"
        assert pod.write_errors() == [], f"{pod.name} tried to write outside its volumes"
    # The modelcar ships the export: a predictor pod exports nothing at start-up.
    for pod in pods.predictors:
        written = [p for volume in pod.volumes.values() for p in volume.rglob("*.onnx") if "models" not in p.parts]
        assert not written, f"{pod.name}: exported {written} although the model ships its export"


def test_pods_fit_their_memory_limits_and_volume_size_limits(pods):
    """Measured after the predictions above (run this module whole): peak memory and what the volumes hold."""
    for pod in pods.all:
        limit = pod.container.get("resources", {}).get("limits", {}).get("memory")
        if limit:
            assert pod.peak_memory_bytes() < quantity_bytes(limit), \
                f"{pod.name}: peak memory {pod.peak_memory_bytes() / 2**20:.0f} MiB, limit {limit}"
        for mount, size_limit in pod.size_limits.items():
            assert pod.volume_bytes(mount) < quantity_bytes(size_limit), \
                f"{pod.name}: {mount} holds {pod.volume_bytes(mount) / 2**20:.0f} MiB, sizeLimit {size_limit}"


def test_secrets_stay_out_of_process_arguments(pods):
    """Anyone who can list processes on the node (or in a shared PID namespace) reads argv."""
    for pod in pods.all:
        lines = pod.command_lines()
        assert lines, f"{pod.name}: no processes found"
        for name, value in pod.secrets.items():
            leaks = [" ".join(line) for line in lines if any(value in arg for arg in line)]
            assert not leaks, f"{pod.name}: the value of {name} (from a Secret) is in a process' arguments"


def test_sandboxes_are_non_root_with_a_read_only_root(pods):
    """What the rehearsal promises: the manifest's uid, writes fail outside the declared volumes."""
    for pod in pods.all:
        read_only = ["/", "/etc", *(path for path, (_, ro) in pod.sandbox.mounts.items() if ro)]
        script = "id -u; " + "".join(f"touch {path}/rehearsal-probe 2>&1; " for path in read_only) + "".join(
            f"touch {path}/rehearsal-probe && echo wrote {path}; " for path in pod.volumes)
        out = subprocess.run(pod.sandbox.wrap(["sh", "-c", script]), capture_output=True, text=True, timeout=30,
                             pass_fds=pod.sandbox.pass_fds).stdout
        uid = pod.container.get("securityContext", {}).get("runAsUser", pod.sandbox.uid)  # KServe's, if it set one
        assert out.splitlines()[0] == str(uid) == str(pod.sandbox.uid) != "0"
        assert out.count("Read-only file system") == len(read_only), out
        assert all(f"wrote {path}" in out for path in pod.volumes), out


def test_kubelet_expansion_rules():
    env = {"A": "x", "EMPTY": ""}
    assert expand("--p=$(A)", env) == "--p=x"
    assert expand("$(EMPTY)-$(MISSING)", env) == "-$(MISSING)"
    assert expand("$$(A) $$ $x $(", env) == "$(A) $ $x $("


def test_kserve_transformer_args_follow_containerconcurrency():
    isvc = {"metadata": {"name": "sentiment", "namespace": "ns"}}
    assert kserve_transformer_args(["--model_name=sentiment"], isvc, {"containerConcurrency": 256}) == [
        "--model_name=sentiment", "--predictor_host", "sentiment-predictor.ns", "--http_port", "8080",
        "--workers", "256"]
    assert kserve_transformer_args(["--workers=1", "--http_port=8080"], isvc, {"containerConcurrency": 256}) == [
        "--workers=1", "--http_port=8080", "--model_name", "sentiment", "--predictor_host", "sentiment-predictor.ns"]


def test_port_flags_move_to_free_ports():
    ports = {8080: 50001}
    args = rewrite_ports(["--http_port=8080", "--grpc_port", "8081", "--model_name=x", "--port", "x"], ports)
    assert args[0] == "--http_port=50001" and args[1:3] == ["--grpc_port", str(ports[8081])]
    assert args[3:] == ["--model_name=x", "--port", "x"] and ports[8081] != 8081


@pytest.fixture(scope="module")
def hf_predictor(tmp_path_factory, model_dir):
    """components/hf-download's predictor pod: the torch image on the storage initializer's download."""
    work = tmp_path_factory.mktemp("rehearsal-hf")
    rehearsal = Rehearsal(list(rendered_setup("dev+hf-download")), work)
    try:
        pod = rehearsal.component("sentiment", "predictor",
                                  models=fake_hf_download(model_dir, work / "download", 1764000000.25))
        pod.wait_ready(COLD_START_S)
        yield pod
    finally:
        rehearsal.stop()


def test_the_hub_download_path_runs_the_torch_image_and_exports_into_its_volume(pods, hf_predictor):
    assert hf_predictor.sandbox.root != Path("/"), "the torch image is not built (make images)"
    site = hf_predictor.sandbox.root / "opt/venv/lib/python3.11/site-packages"
    assert (site / "torch").is_dir() and (site / "transformers").is_dir()
    downloaded, shipped = _predictor_answer(hf_predictor, TEXTS), _predictor_answer(pods.predictors[0], TEXTS)
    # The same model and runtime, whether downloaded and exported here or shipped by the modelcar.
    assert downloaded["model_version"] == shipped["model_version"]
    for row, expected in zip(downloaded["predictions"], shipped["predictions"], strict=True):
        np.testing.assert_allclose([r["score"] for r in row], [e["score"] for e in expected], atol=1e-4)
    # It exported at start-up, into its declared /tmp volume, and wrote nowhere else.
    assert [p for volume in hf_predictor.volumes.values() for p in volume.rglob("model.onnx")]
    assert hf_predictor.write_errors() == []


def test_a_predictor_group_other_than_the_modelcars_cannot_read_the_model(tmp_path, exported_model):
    """The bug a stock cluster would hit with `runAsGroup: 1000` on the predictor: KServe's sidecar runs as
    uid 1010 with gid 0 (no /etc/passwd entry), and the kernel refuses /proc/<pid>/root across groups."""
    docs = copy.deepcopy(list(rendered("dev")))
    isvc = find(docs, "InferenceService", "sentiment")
    isvc["spec"]["predictor"]["containers"][0]["securityContext"]["runAsGroup"] = 1000
    rehearsal = Rehearsal(docs, tmp_path)
    try:
        with pytest.raises(AssertionError, match=r"runs as 1010:1000 but its modelcar as 1010:0"):
            rehearsal.component("sentiment", "predictor", models=exported_model)
        assert rehearsal.sidecars, "the modelcar image is not built (make images)"
    finally:
        rehearsal.stop()


def test_the_runtime_gives_a_uid_without_a_passwd_entry_group_0(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nkserve:x:1000:1000::/home:/usr/sbin/nologin\n")
    assert [passwd_group(tmp_path, uid) for uid in (0, 1000, 1010)] == [0, 1000, 0]
    assert passwd_group(tmp_path / "absent", 1000) == 0
