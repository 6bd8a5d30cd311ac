"""Edge-SD-SR benchmark: edgesdsr-x4 beside yonos-x4 (same autoencoder and UNet sizes) and the
paper config, in one run on a fixed number of threads.

Quality: PSNR / SSIM-Y at 1 step on the official LRx4 (trained models only). Cost: params,
FLOPs and latency of 128->512 (one tile) and 512->2048 (128 px LR tiles, stride 96: 25
evaluations, batched 4 per call); the paper config (169.5M params, random weights: it is not
trained here) at 128->512 only.

    .venv/bin/python benchmarks/edgesdsr.py --threads 2 \
        --edge runs/edgesdsr-x4/edgesdsr-x4.safetensors --yonos runs/yonos-x4/yonos-x4.safetensors

writes ``benchmarks/results/edgesdsr.md``.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from fastdiffsr.bench import bench_model, matmul_gflops, time_upscale
from fastdiffsr.evaluation import evaluate_set
from fastdiffsr.upscaler import count_params
from fastdiffsr.zoo import load_model

ROOT = Path(__file__).resolve().parents[1]
SETS = ("Set5", "Set14", "B100")
PAPER = ROOT / "configs" / "edgesdsr" / "paper.toml"  # timed with random weights


def cost_cells(model, sides: tuple[int, ...], repeats: int) -> list[str]:
    """GFLOPs of 128->512, then (evaluations, ms) per LR side; '-' where not measured."""
    timings = {s: time_upscale(model, s, repeats if s <= 128 else max(1, repeats // 2))
               for s in sides}
    cells = [f"{timings[128].flops / 1e9:.1f}"]
    for side in (128, 512):
        t = timings.get(side)
        cells += [str(t.tiles), f"{t.latency_s * 1e3:.0f}"] if t else ["-", "-"]
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edge", default="edgesdsr-x4", help="edgesdsr-x4 name or file")
    parser.add_argument("--yonos", default="yonos-x4", help="yonos-x4 name or file")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "bench")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "edgesdsr.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    entries = [("edgesdsr-x4", load_model(args.edge), True),  # (label, model, trained)
               ("yonos-x4", load_model(args.yonos), True),
               ("Edge-SD-SR paper config, untrained", bench_model(str(PAPER)), False)]
    rows = ["| model | " + " | ".join(f"{s} PSNR / SSIM" for s in SETS)
            + " | params | GFLOPs 128->512 | evaluations 128->512 | 128->512 ms "
              "| evaluations 512->2048 | 512->2048 ms |",
            "| --- |" + " ---: |" * (len(SETS) + 6)]
    for label, model, trained in entries:
        sides = (128, 512) if trained else (128,)
        quality = [evaluate_set(model, args.data, s)[0] if trained else None for s in SETS]
        rows.append(f"| {label} | "
                    + " | ".join(f"{r.psnr:.2f} / {r.ssim:.4f}" if r else "-" for r in quality)
                    + f" | {count_params(model):,} | "
                    + " | ".join(cost_cells(model, sides, args.repeats)) + " |")
    cpu = platform.processor() or platform.machine()
    text = "\n".join([
        "# Edge-SD-SR benchmark", "",
        f"Written by `benchmarks/edgesdsr.py --edge {args.edge} --yonos {args.yonos}`; "
        f"{args.threads} threads on {cpu}, torch {torch.__version__}; measured matmul rate "
        f"{matmul_gflops():.0f} GFLOP/s. Latency: median of whole `upscale_tensor` calls at 1 "
        "step (LR encoder + UNet + decoder, tiles blended); FLOPs from `torch.utils.flop_counter` "
        "(2 per multiply-add). Quality: official LRx4, Y channel, 4 px crop, seed 0.", "",
        *rows, ""])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
