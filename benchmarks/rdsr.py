"""RDSR benchmark: bicubic vs rdsr-x4 (unfused and deployed) vs the paper-size config.

Quality (PSNR/SSIM-Y on the official LR) and cost (params, FLOPs, latency 128->512 and
512->2048, sampled peak RSS rise) measured in one run on a fixed number of threads.

    .venv/bin/python benchmarks/rdsr.py --data ../shared/data/bench --threads 2
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import torch

from fastdiffsr.bench import fresh_process_peak_mb, matmul_gflops, time_upscale
from fastdiffsr.evaluation import evaluate_set
from fastdiffsr.methods.rdsr import RDSR
from fastdiffsr.train.run import load_recipe
from fastdiffsr.upscaler import count_params
from fastdiffsr.zoo import load_model, save_model

ROOT = Path(__file__).resolve().parents[1]
SETS = ("Set5", "Set14", "B100")


def save_paper_model(folder: Path) -> Path:
    """The paper-size config with random weights (cost only: it is not trained here)."""
    _, _, recipe = load_recipe(ROOT / "configs" / "rdsr" / "paper.toml")
    return save_model(RDSR(recipe.model), folder / "rdsr-paper-untrained.safetensors",
                      {"trained": False})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "bench")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "rdsr.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    paper = str(save_paper_model(tmp))
    entries = [  # label, model name or file, deployed form, scored on the benchmark sets
        ("bicubic", "bicubic", True, True),
        ("rdsr-x4 unfused", "rdsr-x4", False, True),
        ("rdsr-x4 deployed", "rdsr-x4", True, True),
        ("RDSR paper config, untrained (unfused)", paper, False, False),
        ("RDSR paper config, untrained (deployed)", paper, True, False),
    ]
    header = ("| model | " + " | ".join(f"{s} PSNR / SSIM" for s in SETS) +
              " | params | GFLOPs 128->512 | 128->512 ms | 512->2048 ms | peak RSS MB (512) |")
    rows = [header, "| --- |" + " ---: |" * (len(SETS) + 5)]
    for label, name, deploy, scored in entries:
        model = load_model(name, deploy=deploy)
        quality = []
        for s in SETS:
            r = evaluate_set(model, args.data, s)[0] if scored else None
            quality.append(f"{r.psnr:.2f} / {r.ssim:.4f}" if r else "-")
        small = time_upscale(model, 128, args.repeats)
        large = time_upscale(model, 512, max(1, args.repeats // 2))
        peak = fresh_process_peak_mb(name, 512, deploy, args.threads)
        rows.append(f"| {label} | " + " | ".join(quality) +
                    f" | {count_params(model):,} | {small.flops / 1e9:.2f} | "
                    f"{small.latency_s * 1e3:.1f} | {large.latency_s * 1e3:.0f} | {peak:.0f} |")
    cpu = platform.processor() or platform.machine()
    text = "\n".join([
        "# RDSR benchmark", "",
        f"Written by `benchmarks/rdsr.py`; {args.threads} threads on {cpu}, torch "
        f"{torch.__version__}; measured matmul rate {matmul_gflops():.0f} GFLOP/s. Latency is "
        "the median of whole `upscale_tensor` calls (prior + body); FLOPs from "
        "`torch.utils.flop_counter` (2 per multiply-add); peak RSS rise of one 512->2048 upscale "
        "in a fresh process. Quality: official LRx4, Y channel, 4 px crop.", "", *rows, ""])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
