"""The peer of `python -m bench.triton`: NVIDIA Triton (through PyTriton) serving model `sentiment`.

Run by the peer's own venv (`python -m bench.triton --install` makes `.venv-triton`), never the project's:

    .venv-triton/bin/python -m bench.triton_peer MODEL_DIR --http_port P --grpc_port G --metrics_port M \\
        --stats_port S

MODEL_DIR is an export (`python -m predictor.export SRC --out MODEL_DIR`): the same model.onnx and
tokenizer.json the predictor serves. Triton's dynamic batcher (max batch 32, max queue delay 2 ms, one
model instance) hands each batch to the inference callable, which tokenizes the texts, pads them to the
batch's longest and runs ONNX Runtime fp32 through the predictor's own inference core
(`predictor.classifier`: the same truncation, session options and intra-op threads as the predictor
takes on this machine). The two servers then differ in what serves the model, not in how one pass is
computed.

Wire shape: input `text` BYTES of dims [1], so requests of shape [N, 1]. A batching Triton model puts a
batch dimension before each input's own dims, and those may not be empty (triton core,
model_config_utils.cc: "must specify 'dims'"), so it cannot take the predictor's [N]; the predictor
takes [N, 1] as well, and the benchmark sends that body to both. Output `probabilities` FP32 [N, labels]
in the model's label order, as the predictor answers it.

Padding: the callable counts each batch's tokens as the texts' own or padding, and serves the totals as
Prometheus text on http://127.0.0.1:STATS_PORT/metrics (`triton_peer_pass_tokens_total{kind=...}`,
`triton_peer_passes_total`, `triton_peer_pass_texts_total`), the names mirroring the predictor's.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sysconfig
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

MODEL_NAME = "sentiment"
MAX_BATCH_SIZE = 32
MAX_QUEUE_DELAY_US = 2000
"""Issue 22's peer configuration: Triton's dynamic batcher as the predictor's (--max_batch_size 32, --max_wait_ms 2)."""

log = logging.getLogger("bench.triton_peer")


@dataclass
class PassTokens:
    """Tokens the forward passes computed: the texts' own, and padding up to each pass's longest text."""

    passes: int = 0
    texts: int = 0
    text: int = 0
    padding: int = 0

    def add(self, lengths: list[int]) -> None:
        self.passes += 1
        self.texts += len(lengths)
        self.text += sum(lengths)
        self.padding += len(lengths) * max(lengths) - sum(lengths)

    def prometheus(self) -> str:
        return "".join([
            f"triton_peer_passes_total {self.passes}\n",
            f"triton_peer_pass_texts_total {self.texts}\n",
            f'triton_peer_pass_tokens_total{{kind="text"}} {self.text}\n',
            f'triton_peer_pass_tokens_total{{kind="padding"}} {self.padding}\n',
        ])


def texts_of(column: np.ndarray) -> list[str]:
    """The texts of a batch of `text` inputs ([N, 1] bytes, as Triton hands them over)."""
    return [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in column.reshape(-1).tolist()]


def libpython_dir() -> str:
    """The directory of this interpreter's libpython: Triton's python backend stub links against it, and a
    pyenv or uv interpreter keeps it outside the loader's default paths."""
    libdir, library = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    if not libdir or not library or not (Path(libdir) / library).is_file() or not library.endswith(".so"):
        raise SystemExit(f"Triton's python backend needs a shared libpython; this interpreter has {library!r} in "
                         f"{libdir!r}: make the peer's venv from a python built with --enable-shared")
    return libdir


def serve_stats(port: int, tokens: PassTokens) -> ThreadingHTTPServer:
    class Stats(BaseHTTPRequestHandler):
        def do_GET(self):
            body = tokens.prometheus().encode()
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # one line per scrape is noise in the peer's log
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Stats)
    threading.Thread(target=server.serve_forever, name="stats", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.triton_peer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    for name in ("http_port", "grpc_port", "metrics_port", "stats_port"):
        parser.add_argument(f"--{name}", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # PyTriton hands its environment to tritonserver, whose python backend starts the stub that loads libpython.
    libdir = libpython_dir()
    os.environ["LD_LIBRARY_PATH"] = ":".join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p)

    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    from predictor.classifier import SentimentClassifier
    from predictor.cpu import thread_budget

    classifier = SentimentClassifier(args.model_dir, runtime="onnx")  # threads: the predictor's default budget
    budget = thread_budget()
    log.info("model %s from %s: labels=%s, ONNX Runtime fp32 on %d intra-op threads (%s)", MODEL_NAME,
             args.model_dir, classifier.labels, budget.threads, budget.source)
    tokens = PassTokens()

    @batch
    def infer(text: np.ndarray) -> dict[str, np.ndarray]:
        encoded = classifier.encode(texts_of(text))
        tokens.add([len(e.ids) for e in encoded])
        return {"probabilities": classifier.predict_encoded(encoded).astype(np.float32)}

    stats = serve_stats(args.stats_port, tokens)
    config = TritonConfig(http_address="127.0.0.1", http_port=args.http_port, grpc_address="127.0.0.1",
                          grpc_port=args.grpc_port, metrics_address="127.0.0.1", metrics_port=args.metrics_port)
    signal.signal(signal.SIGTERM, _interrupt)  # serve() stops Triton and cleans its workspace on KeyboardInterrupt
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
    stats.shutdown()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
