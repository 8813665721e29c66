"""Forward-pass backends: torch eager (fp32, dynamic int8 or bf16) and ONNX Runtime (fp32 or int8).

Each backend maps padded `input_ids` and `attention_mask` ([batch, width] int64) to softmax
probabilities [batch, num_labels] float32. ONNX models are exported from the Hugging Face
directory once and cached under `onnx_cache_dir/<fingerprint>/`; a `model.onnx` shipped inside
the model directory is used as is (no torch model is loaded at all then), and so is a shipped
`model-int8-per-channel.onnx`; `python -m predictor.export MODEL_DIR` writes both.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .cpu import read_cpu_flags, thread_budget
from .gate import missing_bf16
from .model_dir import ONNX_FP32, ONNX_INT8

log = logging.getLogger(__name__)

RUNTIMES: tuple[str, ...] = ("torch", "torch-int8", "torch-bf16", "onnx", "onnx-int8")
AUTO = "auto"
"""Not a backend: the fastest runtime that passes the accuracy gate (predictor.gate, predictor.calibration)."""


def runtimes_here(flags: set[str]) -> tuple[str, ...]:
    """RUNTIMES a CPU with these flags runs: torch-bf16 is refused without native bf16 (what benchmarks sweep)."""
    return tuple(r for r in RUNTIMES if r != "torch-bf16" or missing_bf16(flags) is None)


TORCH_FREE_HINT = ("ship the ONNX export in the model directory (python -m predictor.export MODEL_DIR --out DIR), "
                   "or run the sentiment-predictor-torch image")

Backend = Callable[[np.ndarray, np.ndarray], np.ndarray]


def load_backend(runtime: str, model_dir: Path, fingerprint: str, threads: int | None,
                 onnx_cache_dir: Path) -> Backend:
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    budget = thread_budget(threads)
    log.debug("forward pass on %d threads (%s)", budget.threads, budget.source)
    threads = budget.threads
    if runtime.startswith("torch"):
        return _torch_backend(model_dir, runtime, threads=threads)
    return _onnx_backend(model_dir, fingerprint, quantize=runtime == "onnx-int8", threads=threads,
                         cache_dir=onnx_cache_dir)


def _import_torch():
    """torch, its OpenMP threads passive: threads that spin after each parallel region (libgomp's default)
    fight the event loop, Redis and each other for a pod's 2 cores (under load, torch's MiniLM at batch 1
    fell to 4 texts/s, from 36 passive). libgomp reads the policy once, when torch loads it."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    return torch


def _torch_model(model_dir: Path):
    _require("torch", "transformers", why=f"loading the PyTorch weights in {model_dir}")
    _import_torch()
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    model.eval()
    return model


def _torch_backend(model_dir: Path, runtime: str, threads: int) -> Backend:
    _require("torch", "transformers", why="the torch runtimes")
    if runtime == "torch-bf16" and (missing := missing_bf16(read_cpu_flags())):
        raise RuntimeError(f"--runtime torch-bf16 needs native bf16 matmuls and {missing} in /proc/cpuinfo (torch "
                           "would emulate bf16, slower than fp32): use --runtime onnx, or auto")
    torch = _import_torch()
    torch.set_num_threads(threads)
    model = _torch_model(model_dir)
    if runtime == "torch-int8":
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    elif runtime == "torch-bf16":
        # Weights cast once, not autocast: autocast casts every weight again in every pass, which costs more
        # than the pass at batch 1 (MiniLM: 44 against 76 texts/s, Sapphire Rapids); faithful either way.
        model = model.to(torch.bfloat16)

    def forward(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits
            return torch.softmax(logits.float(), dim=-1).numpy()

    return forward


def _onnx_backend(model_dir: Path, fingerprint: str, quantize: bool, threads: int,
                  cache_dir: Path) -> Backend:
    import onnxruntime as ort

    path = onnx_model(model_dir, fingerprint, quantize, cache_dir)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning worker threads waste the cores that the event loop, Redis and a co-located
    # transformer need; without spinning, mixed-load tail latency drops (bench/k6_mix.py).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        logits = session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0].astype(np.float32)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    return forward


def onnx_model(model_dir: Path, fingerprint: str, quantize: bool, cache_dir: Path) -> Path:
    """Path of the (exported, optionally quantized) ONNX model, creating it once per fingerprint."""
    target_dir = cache_dir / fingerprint
    if quantize and (model_dir / ONNX_INT8).is_file():
        return model_dir / ONNX_INT8
    fp32 = model_dir / ONNX_FP32 if (model_dir / ONNX_FP32).is_file() else target_dir / ONNX_FP32
    if not fp32.is_file():
        _atomic(fp32, lambda tmp: _export(model_dir, tmp))
    if not quantize:
        return fp32
    int8 = target_dir / ONNX_INT8
    if not int8.is_file():
        _require("onnx", why=f"quantizing {fp32} to int8")
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # Per-channel weights: on the shared SST-2 model, per-tensor int8 lost 1 point of accuracy,
        # per-channel none (bench/accuracy.py).
        _atomic(int8, lambda tmp: quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8,
                                                   per_channel=True))
    return int8


def _export(model_dir: Path, out: Path) -> None:
    _require("torch", "transformers", why=f"exporting {model_dir} to ONNX")
    torch = _import_torch()

    log.info("exporting %s to ONNX (once per model fingerprint)", model_dir)
    model = _torch_model(model_dir)
    ids = torch.ones((2, 8), dtype=torch.int64)
    axes = {0: "batch", 1: "sequence"}
    torch.onnx.export(model, (ids, torch.ones_like(ids)), str(out), input_names=["input_ids", "attention_mask"],
                      output_names=["logits"], opset_version=17, dynamo=False,
                      dynamic_axes={"input_ids": axes, "attention_mask": axes, "logits": {0: "batch"}})


def has_torch() -> bool:
    """Whether this image can run the torch runtimes (the default predictor image cannot)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))


def _require(*modules: str, why: str) -> None:
    """Fail with what to do instead when this image lacks what a model directory needs (the default
    predictor image has no torch, transformers or onnx: it serves shipped ONNX exports)."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise RuntimeError(f"{why} needs {', '.join(missing)}, which this image does not have: {TORCH_FREE_HINT}")


def _atomic(target: Path, write: Callable[[Path], object]) -> None:
    """Write via a temporary file and rename, so concurrent processes never read half a model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        tmp_path = Path(tmp) / target.name
        write(tmp_path)
        os.replace(tmp_path, target)
