"""The local stack (Redis + predictor + transformer) on free ports, with the flags `make serve` uses."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from bench.common import MINILM_DIR
from tests.processes import PredictorProcess, RedisServer, TransformerProcess


@contextmanager
def local_stack(model_dir: Path = MINILM_DIR, predictor_extra: list[str] | None = None,
                transformer_extra: list[str] | None = None):
    redis = RedisServer().start()
    predictor = transformer = None
    try:
        predictor = PredictorProcess(model_dir, extra=predictor_extra).start()
        # `--predictor_protocol grpc-v2` among the extra flags calls the predictor's gRPC port instead.
        extra = list(transformer_extra or [])
        grpc = "grpc-v2" in extra and extra[extra.index("grpc-v2") - 1] == "--predictor_protocol"
        host = predictor.grpc_target if grpc else f"127.0.0.1:{predictor.http_port}"
        transformer = TransformerProcess(host, redis.url, protocol="grpc-v2" if grpc else "v2",
                                         extra=extra).start()
        yield redis, predictor, transformer
    finally:
        for proc in (transformer, predictor, redis):
            if proc is not None:
                proc.stop()
