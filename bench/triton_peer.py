"""The peer of `python -m bench.triton`: NVIDIA Triton (through PyTriton) serving model `sentiment`, run by
the peer's own venv, never the project's:

    .venv-triton/bin/python -m bench.triton_peer EXPORT_DIR --http_port P --grpc_port G --metrics_port M \\
        --stats_port S

Each batch runs through the predictor's own inference core (ONNX Runtime fp32): the two servers differ in what
serves the model, not in how a pass is computed. It counts its passes in the predictor's own series on port S,
so one reader counts both.

Input `text` is BYTES of dims [1] (requests [N, 1]): a batching Triton model puts a batch dimension before each
input's dims, which may not be empty (triton core, model_config_utils.cc: "must specify 'dims'"), so it cannot
take the predictor's [N]. Output `probabilities` FP32 [N, labels].
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sysconfig
import tempfile
from pathlib import Path

import numpy as np

MODEL_NAME = "sentiment"
MAX_BATCH_SIZE = 32
MAX_QUEUE_DELAY_US = 2000
"""Issue 22's peer configuration: Triton's dynamic batcher as the predictor's (--max_batch_size 32, --max_wait_ms 2)."""

log = logging.getLogger("bench.triton_peer")


def padding(lengths: list[int]) -> int:
    """The padding tokens of a pass of texts of these token lengths: each padded to the longest."""
    return len(lengths) * max(lengths) - sum(lengths)


def texts_of(column: np.ndarray) -> list[str]:
    """The texts of a batch of `text` inputs ([N, 1] bytes, as Triton hands them over)."""
    return [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in column.reshape(-1).tolist()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.triton_peer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    for name in ("http_port", "grpc_port", "metrics_port", "stats_port"):
        parser.add_argument(f"--{name}", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # PyTriton hands its environment to tritonserver, whose python backend starts a stub linked against this
    # interpreter's libpython: a pyenv or uv interpreter keeps it outside the loader's default paths.
    libdir, library = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    if not libdir or not library or not (Path(libdir) / library).is_file() or not library.endswith(".so"):
        raise SystemExit(f"Triton's python backend needs a shared libpython; this interpreter has {library!r} in "
                         f"{libdir!r}: make the peer's venv from a python built with --enable-shared")
    os.environ["LD_LIBRARY_PATH"] = ":".join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p)

    from prometheus_client import Counter, Histogram, start_http_server
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    from predictor.classifier import SentimentClassifier
    from predictor.cpu import thread_budget

    classifier = SentimentClassifier(args.model_dir, runtime="onnx")  # threads: the predictor's default budget
    budget = thread_budget()
    log.info("model %s from %s: labels=%s, ONNX Runtime fp32 on %d intra-op threads (%s)", MODEL_NAME,
             args.model_dir, classifier.labels, budget.threads, budget.source)
    pass_tokens = Counter("sentiment_predictor_pass_tokens", "Tokens computed by forward passes.", ["kind"])
    batch_texts = Histogram("sentiment_predictor_batch_texts", "Texts per forward pass.", buckets=(1, 4, 8, 16, 32))

    @batch
    def infer(text: np.ndarray) -> dict[str, np.ndarray]:
        encoded = classifier.encode(texts_of(text))
        lengths = [len(e.ids) for e in encoded]
        batch_texts.observe(len(lengths))
        pass_tokens.labels("text").inc(sum(lengths))
        pass_tokens.labels("padding").inc(padding(lengths))
        return {"probabilities": classifier.predict_encoded(encoded).astype(np.float32)}

    start_http_server(args.stats_port, addr="127.0.0.1")
    config = TritonConfig(http_address="127.0.0.1", http_port=args.http_port, grpc_address="127.0.0.1",
                          grpc_port=args.grpc_port, metrics_address="127.0.0.1", metrics_port=args.metrics_port)
    # serve() stops Triton and cleans its workspace on KeyboardInterrupt, which this handler raises.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="pytriton-") as tmp, \
            Triton(config=config, workspace=Path(tmp) / "workspace") as triton:  # PyTriton makes the directory
        triton.bind(
            model_name=MODEL_NAME,
            infer_func=infer,
            inputs=[Tensor(name="text", dtype=np.bytes_, shape=(1,))],
            outputs=[Tensor(name="probabilities", dtype=np.float32, shape=(len(classifier.labels),))],
            config=ModelConfig(max_batch_size=MAX_BATCH_SIZE,
                               batcher=DynamicBatcher(max_queue_delay_microseconds=MAX_QUEUE_DELAY_US)),
            strict=False,
        )
        triton.serve()


if __name__ == "__main__":
    main()
