"""Typed settings of the predictor: one declaration per setting (serving.settings)."""

from __future__ import annotations

from dataclasses import dataclass

from serving.settings import ServerSettings, setting

from .classifier import DEFAULT_ONNX_CACHE
from .runtimes import AUTO, RUNTIMES


@dataclass(frozen=True)
class PredictorSettings(ServerSettings):
    """Everything the predictor needs, besides the KServe flags it leaves to KServe."""

    model_dir: str = setting("/mnt/models", "Hugging Face model directory (KServe's storage initializer fills "
                             "/mnt/models)", env="MODEL_DIR")
    # KServe sets MODEL_INIT_MODE=async with a modelcar (pkg/utils/storage.go, ConfigureModelcarToContainer):
    # the modelcar container links /mnt/models to its image's /models when it starts, which may be after
    # this container starts.
    model_init_mode: str | None = setting(None, "`async`: the model directory may appear after start-up; wait "
                                          "up to --model_wait_s for it (KServe sets it with a modelcar)",
                                          env="MODEL_INIT_MODE", parse=str, flag=False)
    model_wait_s: float = setting(120.0, "with MODEL_INIT_MODE=async, how long to wait for the model directory",
                                  env="MODEL_WAIT_S")
    # Not `auto` by default: the shipped calibration set is SST-2 train, which the shared model was fine-tuned
    # on, and int8 agrees with fp32 more often there than on unseen sentences (README, Performance).
    runtime: str = setting("onnx", "inference runtime (see bench/ for speed and accuracy); `auto`: the "
                           "fastest runtime that passes the accuracy gate on the model's calibration set "
                           "(predictor/gate.py; torch-bf16 only with torch and native bf16)",
                           env="PREDICTOR_RUNTIME", choices=(*RUNTIMES, AUTO))
    onnx_cache_dir: str = setting(str(DEFAULT_ONNX_CACHE), "where ONNX exports are kept, one folder per model "
                                  "fingerprint", env="ONNX_CACHE_DIR")
    max_length: int | None = setting(None, "truncate each text to this many tokens (unset: the model's maximum)",
                                     parse=int)
    threads: int | None = setting(None, "threads in each forward pass (unset: the container's CPU limit over "
                                  "--parallel_passes, see predictor/cpu.py)", env="PREDICTOR_THREADS", parse=int)
    parallel_passes: int | None = setting(None, "forward passes computed at once, each on its own worker thread "
                                          "(as Triton's instance count; unset: 1)", env="PREDICTOR_PARALLEL_PASSES",
                                          parse=int)
    max_batch_size: int = setting(32, "most texts in one forward pass")
    max_wait_ms: float = setting(2.0, "how long the worker waits for more requests to fill a batch, only while "
                                 "there is concurrent traffic")
    max_queued_texts: int = setting(2048, "texts waiting for the model beyond which requests get 429")
    # On 2 cores (ONNX Runtime) passes of 1,024 padded tokens do not reliably do more tokens/s than
    # passes of 512 (MiniLM and DistilBERT: 19% fewer to 23% more), so larger passes mostly make others
    # wait longer; 512 still holds one text of 512 tokens, or 32 of 16 (docs/decisions/max-batch-tokens.md).
    max_batch_tokens: int = setting(512, "most padded tokens (texts x the longest of them) in one forward pass; "
                                    "a large request is split into such passes, other requests' passes run "
                                    "between them")
    # The texts and characters limits bound bytes, not work: a request's work is its tokens. 16,384 is
    # TEI's max_batch_tokens and max_client_batch_size x 512 (32 texts of 512 tokens, or 256 of 64); a
    # request at the limit takes 10-12 s of MiniLM and 22-25 s of DistilBERT on 2 cores (bench/fairness.py).
    max_request_tokens: int = setting(16_384, "most tokens (after truncation to max_length per text) in one "
                                      "request (413 beyond)")
    # Two maximum-size requests: about 45 s of DistilBERT work on 2 cores (bench/fairness.py); 2,048
    # long texts could otherwise queue 1M tokens. At least max_request_tokens.
    max_queued_tokens: int = setting(32_768, "tokens waiting for the model beyond which requests get 429 "
                                     "(besides max_queued_texts)")
