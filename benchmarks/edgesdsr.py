"""Latent diffusion models side by side: quality and cost in one run on a fixed number of threads.

Each ``--model LABEL=SPEC`` is a zoo name, a model file, or a ``configs/...toml`` (random
weights: cost only). Quality: PSNR / SSIM-Y at 1 step on the official LRx4 (trained models
only). Cost: params, FLOPs and latency of 128->512 (one tile) and 512->2048 (128 px LR tiles,
stride 96: 25 evaluations, batched 4 per call), and each model's latency as a multiple of the
first model's (the reference, ``rdsr-x4`` by default). The defaults compare the shipped
``rdsr-x4``, ``edgesdsr-x4`` and ``yonos-x4`` with the Edge-SD-SR paper config; the previous
latent stack's files come in by path, e.g. from git history:

    mkdir -p runs/old && git show 431fdfa:src/fastdiffsr/weights/edgesdsr-x4.safetensors \\
        > runs/old/edgesdsr-x4.safetensors
    .venv/bin/python benchmarks/edgesdsr.py --threads 2 \\
        --model "edgesdsr-x4, 66 GFLOPs stack=runs/old/edgesdsr-x4.safetensors"

writes ``benchmarks/results/edgesdsr.md`` (rows are written as they finish).
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from fastdiffsr.bench import Timing, bench_model, matmul_gflops, time_upscale
from fastdiffsr.evaluation import evaluate_set
from fastdiffsr.upscaler import count_params

ROOT = Path(__file__).resolve().parents[1]
SETS = ("Set5", "Set14", "B100")
DEFAULTS = ("rdsr-x4=rdsr-x4", "edgesdsr-x4=edgesdsr-x4", "yonos-x4=yonos-x4",
            "Edge-SD-SR paper config, untrained=configs/edgesdsr/paper.toml")
HEADER = ("| model | " + " | ".join(f"{s} PSNR / SSIM" for s in SETS)
          + " | params | GFLOPs 128->512 | 128->512 ms | x reference | 512->2048 evaluations "
            "| 512->2048 ms | x reference |")


def row(label: str, spec: str, data: Path, repeats: int,
        reference: dict[int, Timing]) -> str:
    """One table row; fills ``reference`` (LR side -> timing) on the first call."""
    trained = not spec.endswith(".toml")
    model = bench_model(str(ROOT / spec) if not trained else spec)
    sides = (128, 512) if trained else (128,)
    timings = {s: time_upscale(model, s, repeats if s <= 128 else max(1, repeats // 2))
               for s in sides}
    if not reference:
        reference.update(timings)
    scores = [evaluate_set(model, data, s)[0] if trained else None for s in SETS]
    cells = [f"{r.psnr:.2f} / {r.ssim:.4f}" if r else "-" for r in scores]
    cells += [f"{count_params(model):,}", f"{timings[128].flops / 1e9:.1f}"]
    for side in (128, 512):
        t = timings.get(side)
        if side == 512:
            cells.append(str(t.tiles) if t else "-")
        cells += ([f"{t.latency_s * 1e3:.0f}", f"{t.latency_s / reference[side].latency_s:.2f}"]
                  if t and side in reference else ["-", "-"])
    return f"| {label} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", metavar="LABEL=SPEC",
                        help="a row (repeatable; the defaults come first, the first is the "
                             "latency reference)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "bench")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "edgesdsr.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    specs = [s.partition("=") for s in (*DEFAULTS, *(args.model or []))]
    cpu = platform.processor() or platform.machine()
    lines = [
        "# Latent diffusion SR: quality and cost", "",
        "Written by `benchmarks/edgesdsr.py " + " ".join(f'--model "{s}"' for s in args.model or [])
        + f"`; {args.threads} threads on {cpu}, torch {torch.__version__}; measured matmul "
        f"rate {matmul_gflops():.0f} GFLOP/s, nothing else running. Latency: median of whole "
        "`upscale_tensor` calls at 1 step (LR encoder + UNet + decoder, tiles blended), and as "
        "a multiple of the first row's in this run; FLOPs from `torch.utils.flop_counter` (2 "
        "per multiply-add). Quality: official LRx4, Y channel, 4 px crop, seed 0.", "",
        HEADER, "| --- |" + " ---: |" * (len(SETS) + 7)]
    reference: dict[int, Timing] = {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for label, _, spec in specs:
        lines.append(row(label, spec, args.data, args.repeats, reference))
        args.out.write_text("\n".join(lines) + "\n")
        print(lines[-1], flush=True)


if __name__ == "__main__":
    main()
