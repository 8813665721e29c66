"""`python -m predictor.export MODEL_DIR`: write the ONNX exports next to the model, so pods that
load it (e.g. from storageUri) start without exporting: model.onnx and model-int8-per-channel.onnx.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from .classifier import fingerprint
from .runtimes import ONNX_FP32, ONNX_INT8, onnx_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m predictor.export", description=__doc__)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--no-int8", dest="int8", action="store_false", help="skip the int8 model")
    args = parser.parse_args(argv)
    model_dir: Path = args.model_dir
    with tempfile.TemporaryDirectory() as cache:
        model_hash = fingerprint(model_dir)
        fp32 = onnx_model(model_dir, model_hash, quantize=False, cache_dir=Path(cache))
        if fp32 != model_dir / ONNX_FP32:
            shutil.copy(fp32, model_dir / ONNX_FP32)
        if args.int8:
            int8 = onnx_model(model_dir, model_hash, quantize=True, cache_dir=Path(cache))
            if int8 != model_dir / ONNX_INT8:
                shutil.copy(int8, model_dir / ONNX_INT8)
    print(f"wrote ONNX exports into {model_dir} (model fingerprint {model_hash})")


if __name__ == "__main__":
    main()
