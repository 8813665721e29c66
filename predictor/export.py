"""`python -m predictor.export MODEL_DIR [--out DIR]`: the ONNX exports of a Hugging Face model directory.

Without --out, model.onnx and model-int8-per-channel.onnx are written next to the model, so pods that
load it (e.g. from storageUri) start without exporting. With --out, DIR becomes a self-contained model
directory for the torch-free predictor image and the modelcar (Dockerfile.model): the config, the
tokenizer files, both exports and an export manifest carrying the source model's fingerprint, and no
PyTorch weights. Needs torch and transformers (the torch image, or `make install`).

The export also writes the calibration set `--runtime auto` judges its candidates on (calibration.jsonl)
and records, for this machine's CPU class, which runtime passed the accuracy gate and how fast each was
(runtime-decisions.json; predictor/gate.py). The calibration texts come from --calibration FILE (one
text per line, or JSON lines with a `text` field), else from a calibration.jsonl in the source
directory, else 1,000 SST-2 train sentences when the shared data is present ($SHARED_DIR, default
../shared beside the repository); with none of these (or --no-calibration), `auto` serves fp32 `onnx`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from .calibration import read_texts, record_for_this_cpu, sst2_sample, write_calibration
from .model_dir import CALIBRATION_FILE, CONFIG_FILE, ONNX_FP32, ONNX_INT8, TOKENIZER_FILES, fingerprint, write_manifest
from .runtimes import onnx_model


def default_calibration(model_dir: Path) -> list[str] | None:
    """The source directory's own calibration set, else the SST-2 train sample when the shared data is present."""
    if (model_dir / CALIBRATION_FILE).is_file():
        return read_texts(model_dir / CALIBRATION_FILE)
    shared = Path(os.environ.get("SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
    train = shared / "data" / "sst2" / "train.tsv"
    return sst2_sample(train) if train.is_file() else None


def export(model_dir: Path, out: Path | None = None, int8: bool = True,
           calibration: list[str] | None = None) -> str:
    """Write the exports into `out` (a new self-contained directory) or next to the model; the fingerprint.

    With `calibration` texts, also the calibration set and this CPU class's decision for `--runtime auto`.
    """
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
    if calibration:
        write_calibration(target, calibration)
        decision = record_for_this_cpu(target, model_hash, calibration)
        print(f"--runtime auto on this CPU: {decision.runtime} ({decision.reason}: {decision.detail})")
    if out is not None:
        write_manifest(out, model_hash)
    return model_hash


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m predictor.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--out", type=Path, help="write a self-contained model directory here instead")
    parser.add_argument("--no-int8", dest="int8", action="store_false", help="skip the int8 model")
    parser.add_argument("--calibration", type=Path, help="calibration texts for --runtime auto: one per line, or "
                        ".jsonl with a `text` field (default: see above)")
    parser.add_argument("--no-calibration", action="store_true", help="no calibration set (`auto` serves fp32)")
    args = parser.parse_args(argv)
    calibration = (None if args.no_calibration else
                   read_texts(args.calibration) if args.calibration else default_calibration(args.model_dir))
    model_hash = export(args.model_dir, args.out, args.int8, calibration)
    print(f"wrote ONNX exports into {args.out or args.model_dir} (model fingerprint {model_hash})")


if __name__ == "__main__":
    main()
