"""Typed settings for the predictor, built once from CLI flags and the environment."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .classifier import DEFAULT_ONNX_CACHE, RUNTIMES
from .inputs import TextLimits


@dataclass(frozen=True)
class PredictorSettings:
    """Everything the predictor needs; KServe's own server flags stay in `server_args`."""

    model_name: str = "sentiment"
    """Name on the endpoint paths (/v1/models/NAME:predict, /v2/models/NAME/infer)."""
    model_dir: str = "/mnt/models"
    """Hugging Face model directory; KServe's storage initializer fills /mnt/models."""
    runtime: str = "onnx"
    """Inference runtime: torch, torch-int8, onnx or onnx-int8 (see bench/ for their speed and accuracy)."""
    onnx_cache_dir: str = str(DEFAULT_ONNX_CACHE)
    """Where ONNX exports are kept, one folder per model fingerprint."""
    max_length: int | None = None
    """Truncate inputs to this many tokens (default: the model's maximum)."""
    threads: int | None = None
    """Threads for the forward pass (default: all cores)."""
    max_batch_size: int = 32
    """Most texts in one forward pass."""
    max_wait_ms: float = 2.0
    """How long the worker waits for more requests to fill a batch."""
    max_queued_texts: int = 2048
    """Texts waiting for the model beyond which requests get 429."""
    max_batch_tokens: int = 512
    """Most padded tokens (texts x the longest of them) in one forward pass; a longer text runs alone.

    Caps how long one pass holds the model, so a large request is split into passes that other
    requests' passes run between. On 2 cores (ONNX Runtime) MiniLM and DistilBERT do as many tokens/s
    in passes of 512 padded tokens as of 1,024 (16x32, 4x128, 2x256 against 32x32, 8x128, 4x256),
    so larger passes only make others wait longer; 512 still holds one text of 512 tokens, or 32 of 16
    (bench/batch_tokens.py).
    """
    max_request_tokens: int = 16_384
    """Most tokens (after truncation to max_length per text) in one request; more gets 413.

    The texts and characters limits bound bytes, not work: a request's work is its tokens.
    16,384 is TEI's max_batch_tokens and max_client_batch_size x 512 (32 texts of 512 tokens, or
    256 of 64); a request at the limit takes 10-12 s of MiniLM and 22-25 s of DistilBERT on 2 cores
    (bench/fairness.py), and other requests' passes run between its passes.
    """
    max_queued_tokens: int = 32_768
    """Tokens waiting for the model beyond which requests get 429 (besides max_queued_texts).

    Two maximum-size requests: about 45 s of DistilBERT work on 2 cores (bench/fairness.py), inside
    the transformer's 120 s predictor timeout; 2,048 long texts could hold 1M. At least max_request_tokens.
    """
    limits: TextLimits = field(default_factory=TextLimits)
    """Per-request limits on texts."""
    log_requests: bool = False
    """Write an access-log and a timing line per request."""
    http_port: int = 8080
    grpc_port: int = 8081


def build_parser(parent: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m predictor", parents=[parent] if parent else [],
        description="Sentiment predictor (KServe model server).", conflict_handler="resolve")
    d = PredictorSettings()
    parser.add_argument("--model_name", default=d.model_name, help="model name on the endpoint paths")
    parser.add_argument("--model_dir", default=None, help="model directory (env MODEL_DIR, default /mnt/models)")
    parser.add_argument("--runtime", choices=RUNTIMES, default=None, help="env PREDICTOR_RUNTIME, default onnx")
    parser.add_argument("--onnx_cache_dir", default=None, help=f"env ONNX_CACHE_DIR, default {d.onnx_cache_dir}")
    parser.add_argument("--max_length", type=int, default=None, help="max tokens per text")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (env PREDICTOR_THREADS)")
    parser.add_argument("--max_batch_size", type=int, default=d.max_batch_size)
    parser.add_argument("--max_wait_ms", type=float, default=d.max_wait_ms)
    parser.add_argument("--max_queued_texts", type=int, default=d.max_queued_texts)
    parser.add_argument("--max_batch_tokens", type=int, default=d.max_batch_tokens,
                        help="most padded tokens in one forward pass")
    parser.add_argument("--max_request_tokens", type=int, default=d.max_request_tokens,
                        help="most tokens in one request (after truncation); more gets 413")
    parser.add_argument("--max_queued_tokens", type=int, default=d.max_queued_tokens,
                        help="queued tokens beyond which requests get 429")
    parser.add_argument("--log_requests", action="store_true", help="access and timing log line per request")
    parser.add_argument("--max_texts", type=int, default=d.limits.max_texts, help="max texts per request")
    parser.add_argument("--max_chars", type=int, default=d.limits.max_chars, help="max characters per text")
    parser.add_argument("--max_body_bytes", type=int, default=d.limits.max_body_bytes, help="max request body size")
    if parent is None:
        parser.add_argument("--http_port", type=int, default=d.http_port)
        parser.add_argument("--grpc_port", type=int, default=d.grpc_port)
    return parser


def settings_from(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> PredictorSettings:
    threads = args.threads or (int(env["PREDICTOR_THREADS"]) if env.get("PREDICTOR_THREADS") else None)
    return PredictorSettings(
        model_name=args.model_name,
        model_dir=args.model_dir or env.get("MODEL_DIR") or PredictorSettings.model_dir,
        runtime=args.runtime or env.get("PREDICTOR_RUNTIME") or PredictorSettings.runtime,
        onnx_cache_dir=args.onnx_cache_dir or env.get("ONNX_CACHE_DIR") or PredictorSettings.onnx_cache_dir,
        max_length=args.max_length,
        threads=threads,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queued_texts=args.max_queued_texts,
        max_batch_tokens=args.max_batch_tokens,
        max_request_tokens=args.max_request_tokens,
        max_queued_tokens=args.max_queued_tokens,
        limits=TextLimits(max_texts=args.max_texts, max_chars=args.max_chars, max_body_bytes=args.max_body_bytes),
        log_requests=args.log_requests,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
    )


def parse(argv: Sequence[str] | None = None, env: Mapping[str, str] = os.environ) -> PredictorSettings:
    """Settings from `argv` alone (used by tests and benchmarks; no KServe flags)."""
    return settings_from(build_parser().parse_args(argv), env)
