"""Deployment benchmark: every shipped model in every backend it runs in, side by side, in one
run: PyTorch eager fp32, PyTorch bf16 (``--dtype bf16``: torch.autocast), ONNX Runtime fp32 and
int8 and ExecuTorch (XNNPACK delegate) fp32 and int8 (``fastdiffsr export``; int8 calibrated
on training images) where the model exports.
Latency of the whole upscale (median of ``--repeats``) at 128->512 and 512->2048 on
``--threads`` threads, PSNR-Y on Set5 / Set14 / B100 (official LR), file size.

    .venv/bin/python benchmarks/deploy.py --threads 2

writes ``benchmarks/results/deploy.md``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from fastdiffsr.backends.executorch import export_pte
from fastdiffsr.backends.onnx import export_onnx
from fastdiffsr.bench import time_upscale
from fastdiffsr.data.datasets import calibration_crops
from fastdiffsr.evaluation import evaluate_set
from fastdiffsr.upscaler import UpscaleOptions
from fastdiffsr.zoo import load_model, resolve

ROOT = Path(__file__).resolve().parents[1]
SETS = ("Set5", "Set14", "B100")
MODELS = ("rdsr-x4", "rdsr-x4-real", "bidiffsr-x4", "yonos-x4", "edgesdsr-x4")
EXPORTERS = (("ONNX Runtime", export_onnx, ".onnx"), ("ExecuTorch XNNPACK", export_pte, ".pte"))


def backends(name: str, folder: Path, calibration: Path):
    """(backend label, model or the reason it does not run, options, file) for each backend."""
    model, fp32, bf16 = load_model(name), UpscaleOptions(), UpscaleOptions(dtype="bf16")
    yield "PyTorch fp32", model, fp32, resolve(name)
    yield "PyTorch bf16", model, bf16, resolve(name)
    for runtime, export, suffix in EXPORTERS:
        for dtype in ("fp32", "int8"):
            crops = calibration_crops(calibration, 128, model.scale) if dtype == "int8" else None
            path = folder / f"{name}-{dtype}{suffix}"
            try:
                exported = load_model(export(model, path, 128, dtype, calibration=crops))
                yield f"{runtime} {dtype}", exported, fp32, path
            except Exception as e:  # noqa: BLE001 (a backend that fails is a row of the table)
                yield f"{runtime} {dtype}", f"{type(e).__name__}: {str(e)[:80]}", fp32, path


def row(name: str, label: str, model, opts: UpscaleOptions, path: Path, args) -> str:
    if isinstance(model, str):
        return f"| `{name}` | {label} | not run: {model} |" + " |" * 5
    try:
        timings = [time_upscale(model, side, args.repeats, opts) for side in (128, 512)]
        scores = [evaluate_set(model, args.data, s, opts)[0].psnr for s in SETS]
    except Exception as e:  # noqa: BLE001 (a backend that fails to run is a row of the table)
        reason = f"{type(e).__name__}: {str(e)[:80]}"
        return f"| `{name}` | {label} | failed to run: {reason} |" + " |" * 5
    cells = [f"`{name}`", label, *(f"{t.latency_s * 1e3:.0f}" for t in timings),
             *(f"{p:.2f}" for p in scores), f"{path.stat().st_size / 2**20:.1f}"]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "bench")
    parser.add_argument("--calibration", type=Path,
                        default=ROOT.parent / "shared" / "data" / "train")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "deploy.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = ["| model | backend | 128->512 ms | 512->2048 ms | "
            + " | ".join(SETS) + " | file MiB |", "| --- | --- |" + " ---: |" * 6]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            for label, model, opts, path in backends(name, Path(tmp), args.calibration):
                rows.append(row(name, label, model, opts, path, args))
                print(rows[-1], flush=True)
                args.out.write_text(report(args, rows))  # each row kept as it comes
    print(report(args, rows))


def report(args, rows: list[str]) -> str:
    return "\n".join([
        f"# Deployment backends, {args.threads} threads, one run", "",
        f"Written by `benchmarks/deploy.py --threads {args.threads} --repeats {args.repeats} "
        f"--models {args.models}`. Latency: whole upscale, median of {args.repeats} after a "
        "warm-up; PSNR-Y (dB) on the official LR; ONNX and ExecuTorch files exported at 128 px "
        "tiles (ExecuTorch runs them one tile per call), int8 "
        "calibrated on 16 training crops.", "", *rows, ""])


if __name__ == "__main__":
    main()
