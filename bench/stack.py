"""The local stack (Redis + predictor + transformer) on free ports, with the flags `make serve` uses."""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from pathlib import Path

from bench.common import MINILM_DIR
from harness.processes import PredictorProcess, RedisServer, TransformerProcess

CO_LOCATED_PREDICTOR = ["--threads", "1"]
"""Flags of a predictor sharing its cores with the transformer, Redis and the load generator (as
`make serve` runs it): one forward-pass thread. With two ONNX Runtime threads on 2 shared cores,
each parallel section waits for a thread the scheduler has not run yet: at 818 req/s (5% misses)
a call cost 19 ms of CPU instead of 11 and misses queued for seconds
(docs/decisions/performance-knobs.md). Later flags in `predictor_extra` override it."""


@contextmanager
def local_stack(model_dir: Path = MINILM_DIR, predictor_extra: list[str] | None = None,
                transformer_extra: list[str] | None = None):
    with ExitStack() as running:  # stopped in reverse: the transformer, the predictor, Redis
        redis = running.enter_context(RedisServer().start())
        predictor = running.enter_context(
            PredictorProcess(model_dir, extra=[*CO_LOCATED_PREDICTOR, *(predictor_extra or [])]).start())
        # `--predictor_protocol grpc-v2` among the extra flags calls the predictor's gRPC port instead.
        extra = list(transformer_extra or [])
        grpc = "grpc-v2" in extra and extra[extra.index("grpc-v2") - 1] == "--predictor_protocol"
        host = predictor.grpc_target if grpc else f"127.0.0.1:{predictor.http_port}"
        transformer = running.enter_context(
            TransformerProcess(host, redis.url, protocol="grpc-v2" if grpc else "v2", extra=extra).start())
        yield redis, predictor, transformer
