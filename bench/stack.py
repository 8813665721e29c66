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
        transformer = TransformerProcess(f"127.0.0.1:{predictor.http_port}", redis.url, protocol="v2",
                                         extra=transformer_extra).start()
        yield redis, predictor, transformer
    finally:
        for proc in (transformer, predictor, redis):
            if proc is not None:
                proc.stop()
