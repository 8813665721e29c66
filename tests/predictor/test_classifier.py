"""Unit tests of the inference core on a tiny random model (no shared files needed)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.tiny_model import build_tiny_model
from predictor.classifier import SentimentClassifier
from predictor.model_dir import fingerprint


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def classifier(tiny_dir):
    return SentimentClassifier(tiny_dir)


def test_labels_come_from_id2label(classifier):
    assert classifier.labels == ["NEG", "NEUTRAL", "POS"]


def test_probabilities_are_a_softmax(classifier):
    probs = classifier.predict(["i love this movie", "the plot was boring", "unknownword"])
    assert probs.shape == (3, 3)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert (probs > 0).all()


def test_batched_equals_one_at_a_time(classifier):
    texts = ["great", "the film was terrible and the acting was bad", "i hate this boring plot", "fun"]
    batched = classifier.predict(texts)
    single = np.concatenate([classifier.predict([t]) for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_truncates_to_max_length(tiny_dir):
    short = SentimentClassifier(tiny_dir, max_length=5)
    [enc] = short.encode(["the movie was great fun and the plot was good"])
    assert len(enc.ids) == 5
    # Only the first tokens matter once truncated.
    np.testing.assert_allclose(short.predict(["the movie was great fun and more"]),
                               short.predict(["the movie was great plot plot plot"]), atol=1e-6)


def test_max_length_is_capped_by_the_model(tiny_dir):
    assert SentimentClassifier(tiny_dir, max_length=10_000).max_length == 64


def test_int8_runtime_is_close_to_fp32(tiny_dir, classifier):
    int8 = SentimentClassifier(tiny_dir, runtime="torch-int8")
    texts = ["i love this movie", "terrible acting", "the plot"]
    np.testing.assert_allclose(int8.predict(texts), classifier.predict(texts), atol=0.05)
    assert int8.version.endswith("-torch-int8") and classifier.version.endswith("-torch")
    assert int8.version.split("-")[0] == classifier.version.split("-")[0]


@pytest.mark.parametrize(("runtime", "tolerance"), [("onnx", 1e-5), ("onnx-int8", 0.05)])
def test_onnx_runtimes_agree_with_torch(tmp_path, tiny_dir, classifier, runtime, tolerance):
    fast = SentimentClassifier(tiny_dir, runtime=runtime, onnx_cache_dir=tmp_path)
    texts = ["i love this movie", "terrible acting and a boring plot", "the", "fun fun fun great film"]
    np.testing.assert_allclose(fast.predict(texts), classifier.predict(texts), atol=tolerance)
    assert fast.labels == classifier.labels
    assert fast.version == classifier.version.replace("-torch", f"-{runtime}")


def test_onnx_export_is_cached_per_fingerprint(tmp_path, tiny_dir):
    SentimentClassifier(tiny_dir, runtime="onnx-int8", onnx_cache_dir=tmp_path)
    [folder] = tmp_path.iterdir()
    assert folder.name == fingerprint(tiny_dir)
    files = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert set(files) == {"model.onnx", "model-int8-per-channel.onnx"}
    SentimentClassifier(tiny_dir, runtime="onnx-int8", onnx_cache_dir=tmp_path)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == files  # not exported again


def test_shipped_onnx_model_is_used_and_not_part_of_the_fingerprint(tmp_path, tiny_dir):
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_dir, model_dir)
    before = fingerprint(model_dir)
    SentimentClassifier(model_dir, runtime="onnx", onnx_cache_dir=tmp_path / "cache")
    shutil.copy(tmp_path / "cache" / before / "model.onnx", model_dir / "model.onnx")
    assert fingerprint(model_dir) == before
    cache = tmp_path / "cache2"
    shipped = SentimentClassifier(model_dir, runtime="onnx", onnx_cache_dir=cache)
    assert not cache.exists()  # nothing exported
    np.testing.assert_allclose(shipped.predict(["great film"]), SentimentClassifier(tiny_dir).predict(["great film"]),
                               atol=1e-5)


def test_export_command_ships_both_models(tmp_path, tiny_dir, classifier):
    import shutil

    from predictor.export import main as export

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_dir, model_dir)
    export([str(model_dir)])
    assert {"model.onnx", "model-int8-per-channel.onnx"} <= {p.name for p in model_dir.iterdir()}
    cache = tmp_path / "cache"
    int8 = SentimentClassifier(model_dir, runtime="onnx-int8", onnx_cache_dir=cache)
    assert not cache.exists()
    np.testing.assert_allclose(int8.predict(["great film"]), classifier.predict(["great film"]), atol=0.05)


def test_fingerprint_changes_with_the_model(tmp_path, tiny_dir):
    other = build_tiny_model(tmp_path / "other", seed=1)
    assert fingerprint(tiny_dir) == fingerprint(tiny_dir)
    assert fingerprint(other) != fingerprint(tiny_dir)


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_fingerprint_ignores_download_metadata_and_other_weight_formats(tmp_path, tiny_dir):
    """What KServe's storage initializer (hf:// -> snapshot_download(local_dir=/mnt/models)) adds besides the model."""
    model_dir = _copy(tiny_dir, tmp_path / "model")
    before = fingerprint(model_dir)
    download = model_dir / ".cache" / "huggingface" / "download"
    download.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (download / f"{name}.metadata").write_text(f"3d4ee5a1\n{name}-etag\n1764060000.{len(name)}\n")
    (model_dir / ".cache" / "huggingface" / ".gitignore").write_text("*")
    (model_dir / "README.md").write_text("# model card\n")
    (model_dir / ".gitattributes").write_text("*.bin filter=lfs\n")
    for name in ("pytorch_model.bin", "tf_model.h5", "rust_model.ot", "flax_model.msgpack"):
        (model_dir / name).write_bytes(b"other framework's copy of the weights")
    (model_dir / "onnx").mkdir()
    (model_dir / "onnx" / "model.onnx").write_bytes(b"someone else's export")
    assert fingerprint(model_dir) == before
    (download / "model.safetensors.metadata").write_text("3d4ee5a1\netag\n1764069999.5\n")  # another pod
    assert fingerprint(model_dir) == before


@pytest.mark.parametrize("change", [
    lambda d: (d / "config.json").write_text((d / "config.json").read_text().replace('"POS"', '"POSITIVE"')),
    lambda d: (d / "tokenizer.json").write_text((d / "tokenizer.json").read_text().replace('"movie"', '"film2"')),
    lambda d: (d / "special_tokens_map.json").write_text('{"unk_token": "[UNK]"}'),
    lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:-1] + b"\x01"),
])
def test_fingerprint_changes_with_config_tokenizer_or_weights(tmp_path, tiny_dir, change):
    model_dir = _copy(tiny_dir, tmp_path / "model")
    before = fingerprint(model_dir)
    change(model_dir)
    assert fingerprint(model_dir) != before


def test_fingerprint_follows_the_weights_transformers_loads(tmp_path, tiny_dir):
    model_dir = _copy(tiny_dir, tmp_path / "model")
    weights = (model_dir / "model.safetensors").read_bytes()
    (model_dir / "model.safetensors").unlink()
    (model_dir / "pytorch_model.bin").write_bytes(b"pickled weights")
    pickled = fingerprint(model_dir)
    (model_dir / "pytorch_model.bin").write_bytes(b"other pickled weights")
    assert fingerprint(model_dir) != pickled
    # Sharded safetensors win over the pickled file: the index and every shard it names count.
    (model_dir / "model.safetensors.index.json").write_text(
        '{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}')
    (model_dir / "model-00001-of-00002.safetensors").write_bytes(weights[:100])
    (model_dir / "model-00002-of-00002.safetensors").write_bytes(weights[100:])
    sharded = fingerprint(model_dir)
    assert sharded != pickled
    (model_dir / "pytorch_model.bin").write_bytes(b"ignored now")
    assert fingerprint(model_dir) == sharded
    (model_dir / "model-00002-of-00002.safetensors").write_bytes(weights[100:] + b"\x00")
    assert fingerprint(model_dir) != sharded


def test_fingerprint_needs_weights(tmp_path, tiny_dir):
    model_dir = _copy(tiny_dir, tmp_path / "model")
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model weights"):
        fingerprint(model_dir)


def test_rejects_unknown_runtime_and_missing_dir(tmp_path, tiny_dir):
    with pytest.raises(ValueError, match="runtime must be one of"):
        SentimentClassifier(tiny_dir, runtime="tpu")
    with pytest.raises(FileNotFoundError, match=r"config\.json missing"):
        SentimentClassifier(tmp_path)
