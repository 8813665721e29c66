"""`python -m predictor.export MODEL_DIR [--out DIR]`: the ONNX exports of a Hugging Face model directory.

Without --out, model.onnx and model-int8-per-channel.onnx are written next to the model, so pods that
load it (e.g. from storageUri) start without exporting. With --out, DIR becomes a self-contained model
directory for the torch-free predictor image and the modelcar (Dockerfile.model): the config, the
tokenizer files, both exports and an export manifest carrying the source model's fingerprint, and no
PyTorch weights. Needs torch and transformers (the torch image, or `make install`).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from .model_dir import CONFIG_FILE, ONNX_FP32, ONNX_INT8, TOKENIZER_FILES, fingerprint, write_manifest
from .runtimes import onnx_model


def export(model_dir: Path, out: Path | None = None, int8: bool = True) -> str:
    """Write the exports into `out` (a new self-contained directory) or next to the model; the fingerprint."""
    target = out or model_dir
    target.mkdir(parents=True, exist_ok=True)
    model_hash = fingerprint(model_dir)
    if out is not None:
        for name in (CONFIG_FILE, *TOKENIZER_FILES):
            if (model_dir / name).is_file():
                shutil.copyfile(model_dir / name, out / name)
    with tempfile.TemporaryDirectory() as cache:
        for quantize, name in ((False, ONNX_FP32), *(((True, ONNX_INT8),) if int8 else ())):
            path = onnx_model(model_dir, model_hash, quantize=quantize, cache_dir=Path(cache))
            if path != target / name:
                shutil.copyfile(path, target / name)
    if out is not None:
        write_manifest(out, model_hash)
    return model_hash


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m predictor.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--out", type=Path, help="write a self-contained model directory here instead")
    parser.add_argument("--no-int8", dest="int8", action="store_false", help="skip the int8 model")
    args = parser.parse_args(argv)
    model_hash = export(args.model_dir, args.out, args.int8)
    print(f"wrote ONNX exports into {args.out or args.model_dir} (model fingerprint {model_hash})")


if __name__ == "__main__":
    main()
