"""Typed settings of the predictor: one declaration per setting (serving.settings)."""

from __future__ import annotations

from dataclasses import dataclass

from serving.settings import ServerSettings, setting

from .classifier import DEFAULT_ONNX_CACHE, RUNTIMES


@dataclass(frozen=True)
class PredictorSettings(ServerSettings):
    """Everything the predictor needs, besides the KServe flags it leaves to KServe."""

    model_dir: str = setting("/mnt/models", "Hugging Face model directory (KServe's storage initializer fills "
                             "/mnt/models)", env="MODEL_DIR")
    runtime: str = setting("onnx", "inference runtime (see bench/ for speed and accuracy)",
                           env="PREDICTOR_RUNTIME", choices=RUNTIMES)
    onnx_cache_dir: str = setting(str(DEFAULT_ONNX_CACHE), "where ONNX exports are kept, one folder per model "
                                  "fingerprint", env="ONNX_CACHE_DIR")
    max_length: int | None = setting(None, "truncate each text to this many tokens (unset: the model's maximum)",
                                     parse=int)
    threads: int | None = setting(None, "threads for the forward pass (unset: the container's CPU limit, see "
                                  "predictor/cpu.py)", env="PREDICTOR_THREADS", parse=int)
    max_batch_size: int = setting(32, "most texts in one forward pass")
    max_wait_ms: float = setting(2.0, "how long the worker waits for more requests to fill a batch, only while "
                                 "there is concurrent traffic")
    max_queued_texts: int = setting(2048, "texts waiting for the model beyond which requests get 429")
